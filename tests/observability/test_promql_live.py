"""Every PromQL expression the project ships returns real data from the running shop.

For each of two modes a local shop runs under load (``clusterip``: pick_first
clients, one connection, one pod; ``headless``: round_robin over every replica),
a real Prometheus scrapes every replica and evaluates the chart's rule files, and
each expression of every dashboard and rule is queried. An expression that parses
but returns nothing would be an empty panel; here it fails the test. Expressions on
Envoy's ``istio_*`` metrics need the mesh, which cannot run here: they are checked
to parse and evaluate, and reported as mesh-only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..support.dashboards import Expression
from ..support.live_shop import LiveShop, StartShops


@pytest.fixture(scope="module", params=["clusterip", "headless"])
def live(request: pytest.FixtureRequest, start_loaded_shops: StartShops) -> Iterator[LiveShop]:
    shop = start_loaded_shops([request.param])
    try:
        yield shop
    finally:
        shop.stop()  # before the next mode's shop starts: one at a time on 2 cores


def test_there_is_something_to_check(shop_expressions: list[Expression]) -> None:
    dashboards = {e.dashboard for e in shop_expressions if e.kind == "panel"}
    assert len(dashboards) >= 3
    assert sum(e.kind == "panel" for e in shop_expressions) >= 20
    assert sum(e.kind == "record" for e in shop_expressions) >= 3
    assert sum(e.kind == "alert" for e in shop_expressions) >= 3


def test_every_panel_and_recording_rule_returns_data(
    live: LiveShop, shop_expressions: list[Expression]
) -> None:
    empty, mesh_only = [], []
    for expression in shop_expressions:
        if expression.kind == "alert":
            continue
        result = live.prometheus.query(expression.expr)  # raises on a parse error
        if expression.mesh_only:
            mesh_only.append(expression.source)
        elif not result:
            empty.append(f"{expression.source}\n    {expression.expr}")
    assert empty == [], f"{len(empty)} expressions returned no data in mode={live.mode}"
    print(f"mode={live.mode}: mesh-only (parsed, not checked for data): {mesh_only}")


def test_recorded_series_carry_the_mode(live: LiveShop, shop_expressions: list[Expression]) -> None:
    imbalance = {
        s["metric"]["service"]: round(float(s["value"][1]), 2)
        for s in live.prometheus.query("service:grpc_server_imbalance:ratio1m")
    }
    print(f"mode={live.mode}: service:grpc_server_imbalance:ratio1m = {imbalance}")
    # The figure the dashboards lead with tells the two modes apart: N pods -> N.
    if live.mode == "clusterip":
        assert imbalance["orders"] > 2.5 and imbalance["inventory"] > 2.5, imbalance
    else:
        assert imbalance["orders"] < 1.5 and imbalance["inventory"] < 1.5, imbalance
    records = [e for e in shop_expressions if e.kind == "record"]
    for expression in records:
        name = expression.source.split("record ", 1)[1]
        series = live.prometheus.query(name)
        assert series, f"{name}: the rule has not produced a series"
        assert {s["metric"].get("mode") for s in series} == {live.mode}, name


def test_alert_conditions_see_the_balancing_problem(
    live: LiveShop, shop_expressions: list[Expression]
) -> None:
    """Alert expressions evaluate; the balance alerts hold exactly in the pinned mode."""
    balance_alerts = {"GrpcShopImbalance", "GrpcShopPodStarved"}
    seen = set()
    for expression in shop_expressions:
        if expression.kind != "alert":
            continue
        result = live.prometheus.query(expression.expr)
        name = expression.source.split("alert ", 1)[1]
        if name in balance_alerts:
            seen.add(name)
            firing_for = {s["metric"].get("service") for s in result}
            if live.mode == "clusterip":
                # One pinned connection per client: 2 of 3 orders and inventory pods idle.
                assert {"orders", "inventory"} <= firing_for, (name, result)
            else:
                assert firing_for == set(), (name, result)
    assert seen == balance_alerts
