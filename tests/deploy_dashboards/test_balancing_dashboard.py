"""The "gRPC balancing" Grafana dashboard the chart ships (dashboards/balancing.json).

Structure is checked in Python; every PromQL expression is handed to a real
Prometheus (the Debian ``prometheus`` binary, empty TSDB, loopback only) after the
substitutions Grafana makes, so a query that does not parse fails here and not on
someone's Grafana.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "helm" / "grpc-shop" / "dashboards" / "balancing.json"
)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in place of the variables the queries may use.
GRAFANA_SUBSTITUTIONS = {"__rate_interval": "1m", "service": ".*"}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")

# Loopback requests must not go through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def as_grafana_sends(expr: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_SUBSTITUTIONS, f"unexpected variable ${name} in {expr!r}"
        return GRAFANA_SUBSTITUTIONS[name]

    return VARIABLE.sub(replace, expr)


# --- a real Prometheus -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get_json(url: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    """GET (or POST a form) and decode the JSON body, also from 4xx/5xx answers."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with _HTTP.open(urllib.request.Request(url, data=body), timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            answer = json.load(error)
    return answer


def _ready(base: str) -> bool:
    try:
        with _HTTP.open(f"{base}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        error.close()
        return False
    except OSError:
        return False


def _start_prometheus(binary: str, workdir: Path, timeout_s: float = 15.0) -> Iterator[str]:
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    log_path = workdir / "prometheus.log"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(base):
            if process.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {process.returncode} during start-up:\n"
                    + log_path.read_text(errors="replace")[-2000:],
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"prometheus not ready on {base} within {timeout_s}s:\n"
                    + log_path.read_text(errors="replace")[-2000:],
                    pytrace=False,
                )
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prometheus with an empty TSDB on a free loopback port."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the `prometheus` binary is not on PATH; these tests need a real Prometheus to "
            "parse the dashboard's queries. Install the Debian package `prometheus` "
            "(`make sysdeps` does it, or `apt-get install prometheus`).",
            pytrace=False,
        )
    yield from _start_prometheus(binary, tmp_path_factory.mktemp("prometheus"))


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


# --- every query through Prometheus's own parser ---------------------------------------


def test_every_expression_is_accepted_by_prometheus(prometheus: str) -> None:
    problems = []
    found = expressions(load_dashboard())
    assert found
    for where, expr in found:
        answer = _get_json(f"{prometheus}/api/v1/query", {"query": as_grafana_sends(expr)})
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}")
    assert not problems, "Prometheus rejected:\n" + "\n".join(problems)


def test_service_variable_query_is_accepted_by_prometheus(prometheus: str) -> None:
    variable = next(v for v in load_dashboard()["templating"]["list"] if v["name"] == "service")
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
    assert match, variable["definition"]
    selector, label = match.groups()
    answer = _get_json(
        f"{prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": selector})
    )
    assert answer.get("status") == "success", answer


def test_a_broken_expression_is_rejected(prometheus: str) -> None:
    """The parse check above can fail: Prometheus answers status error for bad PromQL."""
    answer = _get_json(f"{prometheus}/api/v1/query", {"query": "sum by (pod (up)"})
    assert answer.get("status") == "error"
    assert answer.get("errorType") == "bad_data"
