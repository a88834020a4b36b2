"""The mesh row of the "mode comparison" dashboard (dashboards/mode-comparison.json).

Besides Istio's own istio_* metrics, which only Istio's build of Envoy has, the row
reads Envoy's cluster stats, which upstream Envoy and Istio's sidecars both expose:
requests, retries and active outlier ejections per upstream cluster, labelled
``cluster_name``. Here: the panels are in that row, query those metrics by that label,
and their cluster selector keeps the clusters of the chosen services and no others.
test_dashboards_all.py hands every query to a real Prometheus; the chart tests check
that mode=istio asks Istio's sidecars for these stats (test_chart_modes.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ..support.paths import DASHBOARDS_DIR

DASHBOARD = DASHBOARDS_DIR / "mode-comparison.json"
MESH_ROW = "Under Istio (Envoy)"
REQUESTS = "Envoy: requests per upstream endpoint cluster"
EJECTIONS = "Envoy: active outlier ejections per upstream cluster"
ENVOY_METRICS = {
    REQUESTS: {"envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_retry"},
    EJECTIONS: {"envoy_cluster_outlier_detection_ejections_active"},
}
# Istio's sidecar bootstrap (istio/istio tools/packaging/common/envoy_bootstrap.json,
# stats_tags): the tag that turns cluster.<name>.<stat> into envoy_cluster_<stat> with a
# cluster_name label. Envoy removes the first group from the stat name; the second is
# the tag's value. The lab's upstream Envoy is configured with the same tag name.
ISTIO_CLUSTER_NAME_TAG = re.compile(r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)")
CLUSTER_SELECTOR = re.compile(r'cluster_name=~"([^"\\]*)"')
METRIC = re.compile(r"\b(envoy_\w+)\{")
SERVICES = ("gateway", "orders", "inventory")


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def row_panels(dashboard: dict[str, Any], title: str) -> dict[str, dict[str, Any]]:
    """title -> panel, for the panels of one row: the row's own (collapsed) or those
    placed below it and above the next row (expanded)."""
    top = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows = [p for p in top if p["type"] == "row"]
    (row,) = [r for r in rows if r["title"] == title]
    if row.get("collapsed"):
        return {p["title"]: p for p in row["panels"]}
    below = [r["gridPos"]["y"] for r in rows if r["gridPos"]["y"] > row["gridPos"]["y"]]
    end = min(below, default=float("inf"))
    return {
        p["title"]: p
        for p in top
        if p["type"] != "row" and row["gridPos"]["y"] < p["gridPos"]["y"] < end
    }


def envoy_panels() -> dict[str, dict[str, Any]]:
    mesh = row_panels(load_dashboard(), MESH_ROW)
    missing = ENVOY_METRICS.keys() - mesh.keys()
    assert not missing, f"not in the {MESH_ROW!r} row: {sorted(missing)}; it has {sorted(mesh)}"
    return {title: mesh[title] for title in ENVOY_METRICS}


def cluster_selectors(panel: dict[str, Any]) -> list[str]:
    """The cluster_name regex of every selector of every target of a panel."""
    found = [s for t in panel["targets"] for s in CLUSTER_SELECTOR.findall(t["expr"])]
    assert found, f'{panel["title"]}: no cluster_name=~"..." selector'
    return found


def as_grafana_sends(regex: str, services: tuple[str, ...]) -> str:
    """$service as Grafana sends a multi-value variable to Prometheus: (a|b)."""
    return regex.replace("$service", "(" + "|".join(services) + ")")


def as_prometheus_series(stat: str) -> tuple[str, str]:
    """(metric, cluster_name) of an Envoy stat under Istio's cluster_name tag."""
    match = ISTIO_CLUSTER_NAME_TAG.match(stat)
    assert match, stat
    name = stat[: match.start(1)] + stat[match.end(1) :]
    return "envoy_" + name.replace(".", "_"), match.group(2)


# --- the panels ------------------------------------------------------------------------


def test_the_mesh_row_has_envoys_cluster_panels() -> None:
    for title, panel in envoy_panels().items():
        exprs = [t["expr"] for t in panel["targets"]]
        used = {m for expr in exprs for m in METRIC.findall(expr)}
        assert used == ENVOY_METRICS[title], f"{title}: {sorted(used)}"
        for expr in exprs:
            # Works without Istio's proxy build: no istio_* metric, no Istio label.
            assert "istio_" not in expr, f"{title}: {expr}"
            assert re.match(r"(sum|max) by \(cluster_name\) \(", expr), f"{title}: {expr}"
        assert all("{{cluster_name}}" in t["legendFormat"] for t in panel["targets"]), title


def test_retries_are_drawn_apart_from_requests() -> None:
    panel = envoy_panels()[REQUESTS]
    legends = {t["legendFormat"].split(" ")[0]: t["expr"] for t in panel["targets"]}
    assert legends.keys() == {"requests", "retries"}
    assert "envoy_cluster_upstream_rq_retry" in legends["retries"]
    assert "envoy_cluster_upstream_rq_total" in legends["requests"]
    (dashed,) = panel["fieldConfig"]["overrides"]
    assert dashed["matcher"] == {"id": "byRegexp", "options": "/^retries .*/"}
    assert panel["fieldConfig"]["defaults"]["unit"] == "reqps"


def test_ejections_are_a_count_of_endpoints() -> None:
    panel = envoy_panels()[EJECTIONS]
    defaults = panel["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["decimals"], defaults["min"]) == ("none", 0, 0)
    # A gauge: read as it is, not rated.
    (target,) = panel["targets"]
    assert "rate(" not in target["expr"]
    steps = defaults["thresholds"]["steps"]
    assert [(s["color"], s["value"]) for s in steps] == [("green", None), ("orange", 1)]


def test_descriptions_say_where_the_data_comes_from_and_what_is_healthy() -> None:
    for title, panel in envoy_panels().items():
        text = panel["description"]
        for needed in (
            *ENVOY_METRICS[title],
            "cluster_name",
            "outbound|<port>||<service host>",
            "Healthy:",
            "upstream Envoy",
            "proxyStatsMatcher",
            "this panel is empty, which is expected",
        ):
            assert needed in text, f"{title}: say {needed!r}"


# --- the cluster selector --------------------------------------------------------------


@pytest.mark.parametrize(
    "cluster",
    [
        "outbound|50051||orders.shop.svc.cluster.local",
        "outbound|50051||shop-orders.shop.svc.cluster.local",
        "outbound|50051||my-release-orders.prod.svc.cluster.local",
        "outbound|50051|v1|shop-orders.shop.svc.cluster.local",
        "outbound|50051||orders",
    ],
)
def test_the_selector_keeps_the_chosen_services_clusters(cluster: str) -> None:
    for panel in envoy_panels().values():
        for regex in cluster_selectors(panel):
            # Prometheus anchors label regexes at both ends: fullmatch.
            assert re.fullmatch(as_grafana_sends(regex, ("orders",)), cluster), regex
            assert re.fullmatch(as_grafana_sends(regex, SERVICES), cluster), regex


@pytest.mark.parametrize(
    ("cluster", "services"),
    [
        ("outbound|50051||shop-inventory.shop.svc.cluster.local", ("orders",)),
        ("outbound|50051||shop-orders.shop.svc.cluster.local", ("inventory",)),
        ("outbound|50051||shop-ordersx.shop.svc.cluster.local", ("orders",)),
        ("inbound|50051||", SERVICES),
        ("inbound|50051||shop-orders.shop.svc.cluster.local", SERVICES),
        ("outbound|4317||opentelemetry-collector.observability.svc.cluster.local", SERVICES),
        ("outbound|5432||shop-postgresql.shop.svc.cluster.local", SERVICES),
        ("xds-grpc", SERVICES),
        ("BlackHoleCluster", SERVICES),
        ("PassthroughCluster", SERVICES),
    ],
)
def test_the_selector_drops_other_clusters(cluster: str, services: tuple[str, ...]) -> None:
    for panel in envoy_panels().values():
        for regex in cluster_selectors(panel):
            assert not re.fullmatch(as_grafana_sends(regex, services), cluster), regex


@pytest.mark.parametrize(
    "stat",
    [
        "cluster.outbound|50051||orders.shop.svc.cluster.local.upstream_rq_total",
        "cluster.outbound|50051||shop-gateway.shop.svc.cluster.local.upstream_rq_retry",
        "cluster.outbound|50051||shop-inventory.shop.svc.cluster.local"
        ".outlier_detection.ejections_active",
    ],
)
def test_istios_series_of_a_stat_is_what_a_panel_queries(stat: str) -> None:
    """The stat name a sidecar keeps (see the chart's proxyStatsMatcher) becomes, under
    Istio's cluster_name tag, a series one of the panels selects."""
    metric, cluster = as_prometheus_series(stat)
    assert cluster.startswith("outbound|50051||") and cluster.endswith(".svc.cluster.local")
    targets = [
        target
        for panel in envoy_panels().values()
        for target in panel["targets"]
        if metric in METRIC.findall(target["expr"])
    ]
    assert targets, f"{stat} -> {metric}: no panel reads it"
    for target in targets:
        for regex in CLUSTER_SELECTOR.findall(target["expr"]):
            assert re.fullmatch(as_grafana_sends(regex, SERVICES), cluster), (metric, regex)
