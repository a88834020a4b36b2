"""Every Grafana dashboard the chart and docker-compose ship (helm/grpc-shop/dashboards).

The same files are loaded by Grafana's sidecar (Helm) and by file provisioning
(compose), against a Prometheus datasource whose uid differs per install, so each
dashboard must pick its datasource through a variable. Structure is checked in
Python; every PromQL expression and variable query goes through a real Prometheus
after the substitutions Grafana makes, so a query that does not parse fails here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shop.local.prometheus import PrometheusServer, QueryError

from ..support.paths import DASHBOARDS_DIR

DASHBOARD_FILES = sorted(DASHBOARDS_DIR.glob("*.json"))
# Dashboards the project documents; more may be added, none of these may go missing.
EXPECTED = {
    "balancing.json": "grpc-shop-balancing",
    "service-red.json": "grpc-shop-service-red",
    "mode-comparison.json": "grpc-shop-mode-comparison",
}
# Grafana's built-in variables, as Grafana fills them in for a 15-minute view.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "15m",
    "__range_s": "900",
    "__range_ms": "900000",
}
RANGE_WINDOWS = {"$__rate_interval", "${__rate_interval}"}
# $name, ${name} and ${name:format}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
QUANTILE_SUM = re.compile(r"histogram_quantile\(\s*[\d.]+\s*,\s*sum by \(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Top-level panels and those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in _all_panels(dashboard) if p["type"] != "row"]


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{panel['title']} / {target.get('refId')}", target)
        for panel in _query_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    text = query.get("query", "") if isinstance(query, dict) else query
    return str(text or variable.get("definition", ""))


def _as_grafana_sends(expr: str, variables: dict[str, dict[str, Any]]) -> str:
    """Builtins get their usual value; dashboard variables match anything (All)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        assert name in variables, f"${name} is not a variable of this dashboard: {expr!r}"
        return ".*"

    return VARIABLE.sub(replace, expr)


@pytest.fixture(params=DASHBOARD_FILES, ids=[path.name for path in DASHBOARD_FILES])
def dashboard_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture
def dashboard(dashboard_file: Path) -> dict[str, Any]:
    return _load(dashboard_file)


# --- the folder ------------------------------------------------------------------------


def test_the_documented_dashboards_are_all_there() -> None:
    found = {path.name: _load(path).get("uid") for path in DASHBOARD_FILES}
    assert EXPECTED.items() <= found.items(), found


def test_uids_and_titles_are_unique_across_dashboards() -> None:
    dashboards = [_load(path) for path in DASHBOARD_FILES]
    for key in ("uid", "title"):
        counts = Counter(d.get(key) for d in dashboards)
        assert all(n == 1 for n in counts.values()), f"duplicate {key}: {counts}"


# --- each dashboard --------------------------------------------------------------------


def test_is_formatted_json_with_an_identity(dashboard_file: Path) -> None:
    text = dashboard_file.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, ensure_ascii=False) + "\n", (
        f"keep {dashboard_file.name} formatted: json.dumps(data, indent=2, ensure_ascii=False)"
    )
    uid = data.get("uid")
    # Grafana rejects uids over 40 characters; provisioning needs a fixed one.
    assert isinstance(uid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid), uid
    assert data.get("title", "").strip()
    assert "grpc-shop" in data.get("tags", [])
    assert data.get("id") is None, "a provisioned dashboard must not carry a database id"
    assert data.get("description", "").strip(), "say what the dashboard is for"


def test_panel_ids_are_unique_and_every_panel_is_placed(dashboard: dict[str, Any]) -> None:
    panels = list(_all_panels(dashboard))
    assert panels
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) for i in ids), ids
    numbers = [i for i in ids if isinstance(i, int)]  # all of them, as asserted
    assert len(numbers) == len(set(numbers)), f"duplicate panel ids: {sorted(numbers)}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel.get("gridPos")
        assert grid and {"h", "w", "x", "y"} <= grid.keys(), f"{panel['title']}: no gridPos"
        assert grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"


def test_every_panel_explains_itself_and_queries_through_the_variable(
    dashboard: dict[str, Any],
) -> None:
    variables = _variables(dashboard)
    sources = {
        name
        for name, v in variables.items()
        if v.get("type") == "datasource" and v.get("query") == "prometheus"
    }
    assert sources, "no datasource variable of type prometheus"
    allowed = {f"${name}" for name in sources} | {f"${{{name}}}" for name in sources}
    panels = _query_panels(dashboard)
    assert panels
    for panel in panels:
        title = panel["title"]
        assert panel.get("description", "").strip(), f"{title}: no description"
        assert panel.get("targets"), f"{title}: no targets"
        for holder in (panel, *panel["targets"]):
            source = holder.get("datasource")
            assert isinstance(source, dict), f"{title}: datasource {source!r}"
            assert source.get("type") == "prometheus", f"{title}: {source}"
            assert source.get("uid") in allowed, f"{title}: fixed datasource {source}"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{title}: empty expr"
            assert target.get("refId"), f"{title}: target without refId"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: duplicate refIds {ref_ids}"
    for name, variable in variables.items():
        if variable.get("type") == "query":
            assert variable.get("datasource", {}).get("uid") in allowed, name


def test_rates_use_grafanas_rate_interval(dashboard: dict[str, Any]) -> None:
    for where, target in _targets(dashboard):
        # Brackets inside label matchers ("grpc[.]health") are regex, not windows.
        code = STRING.sub('""', target["expr"])
        windows = set(re.findall(r"\[([^\]]*)\]", code))
        assert windows <= RANGE_WINDOWS, f"{where}: range windows {windows}"


def test_latency_panels_link_to_traces_through_exemplars(dashboard: dict[str, Any]) -> None:
    """A timeseries of histogram quantiles is a latency panel: its targets ask for
    exemplars, which Grafana draws as dots linking to the trace (datasource jaeger)."""
    for panel in _query_panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            if "histogram_quantile" not in expr:
                continue
            for by in QUANTILE_SUM.findall(expr):
                assert "le" in re.split(r"\s*,\s*", by), f"{panel['title']}: sum by ({by})"
            if panel["type"] == "timeseries":
                assert target.get("exemplar") is True, f"{panel['title']}: exemplar off"


# --- through Prometheus's own parser ---------------------------------------------------


def test_every_expression_is_accepted_by_prometheus(
    dashboard: dict[str, Any], empty_prometheus: PrometheusServer
) -> None:
    variables = _variables(dashboard)
    found = _targets(dashboard)
    assert found
    problems = []
    for where, target in found:
        try:
            empty_prometheus.query(_as_grafana_sends(target["expr"], variables))
        except QueryError as error:
            problems.append(f"{where}: {error}")
    assert not problems, "Prometheus rejected:\n" + "\n".join(problems)


def test_variable_queries_are_accepted_by_prometheus(
    dashboard: dict[str, Any], empty_prometheus: PrometheusServer
) -> None:
    variables = _variables(dashboard)
    for name, variable in variables.items():
        if variable.get("type") != "query":
            continue
        query = _variable_query(variable)
        match = LABEL_VALUES.fullmatch(query.strip())
        assert match, f"${name}: {query!r} is not label_values(selector, label)"
        selector, _label = match.groups()
        # The series selector is an instant vector expression too.
        empty_prometheus.query(_as_grafana_sends(selector, variables))


def test_a_broken_expression_is_rejected(empty_prometheus: PrometheusServer) -> None:
    """The parse check above can fail: Prometheus refuses bad PromQL."""
    with pytest.raises(QueryError, match="bad_data"):
        empty_prometheus.query("sum by (pod (up)")
