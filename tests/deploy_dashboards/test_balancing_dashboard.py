"""The "gRPC balancing" Grafana dashboard the chart ships (dashboards/balancing.json).

Its balancing-specific structure (thresholds, units, variables) is checked here;
test_dashboards_all.py hands every query of every dashboard to a real Prometheus.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..support.paths import DASHBOARDS_DIR

DASHBOARD = DASHBOARDS_DIR / "balancing.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in place of the variables the queries may use.

# Loopback requests must not go through a proxy from the environment.


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries data (rows only group panels)."""
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(``panel title / refId``, expr) for every target of every panel."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in query_panels(dashboard)
        for target in panel["targets"]
    ]


# --- structure -------------------------------------------------------------------------


def test_dashboard_is_formatted_json_with_identity() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    dashboard = json.loads(text)
    assert text == json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n", (
        "keep balancing.json formatted: json.dumps(data, indent=2, ensure_ascii=False)"
    )
    assert dashboard["uid"] == "grpc-shop-balancing"
    assert dashboard["title"] == "gRPC balancing"
    assert "grpc-shop" in dashboard["tags"]
    assert dashboard["refresh"] == "10s"
    assert dashboard["time"] == {"from": "now-15m", "to": "now"}
    assert dashboard.get("id") is None, "a provisioned dashboard must not carry a database id"


def test_variables_make_it_work_with_any_prometheus() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    service = variables["service"]
    assert service["type"] == "query"
    assert service["datasource"] == DATASOURCE
    assert service["multi"] is True
    assert service["includeAll"] is True
    query = service["query"]
    query = query["query"] if isinstance(query, dict) else query
    assert query == "label_values(shop_instance_info, service)"


def test_panel_ids_are_unique_and_every_panel_is_placed() -> None:
    panels = load_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_panel_uses_the_datasource_variable_and_explains_itself() -> None:
    panels = query_panels(load_dashboard())
    assert len(panels) >= 7
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel.get("description", "").strip(), f"{panel['title']}: no description"
        assert panel["targets"], f"{panel['title']}: no targets"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), f"{panel['title']}: empty expr"


def test_rates_use_grafanas_rate_interval() -> None:
    for where, expr in expressions(load_dashboard()):
        windows = set(re.findall(r"\[([^\]]*)\]", expr))
        assert windows <= {"$__rate_interval"}, f"{where}: range windows {windows}"


def test_balancing_panels_carry_their_thresholds_and_units() -> None:
    panels = query_panels(load_dashboard())
    imbalance = [p for p in panels if "imbalance" in p["title"].lower()]
    assert imbalance, "no imbalance panel"
    for panel in imbalance:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [(s["color"], s["value"]) for s in steps] == [
            ("green", None),
            ("orange", 1.2),
            ("red", 1.5),
        ], panel["title"]
    share = [p for p in panels if "share" in p["title"].lower()]
    assert share, "no share panel"
    for panel in share:
        assert panel["fieldConfig"]["defaults"]["unit"] == "percent"
        assert "100/N" in panel["description"]
    repeated = [p for p in panels if p.get("repeat")]
    assert repeated and all(p["repeat"] == "service" for p in repeated)
