"""The mode-comparison dashboard shows modes side by side when one Prometheus sees both.

Two shops run at once (smaller, to fit two cores): one pinned (``clusterip``), one
balanced (``headless``). Every panel of the comparison dashboard that groups by
``mode`` must return a series for each, and the leading figure must tell them apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from ..support.dashboards import Expression
from ..support.live_shop import LiveShop, StartShops

MODES = ["clusterip", "headless"]


@pytest.fixture(scope="module")
def both(start_loaded_shops: StartShops) -> Iterator[LiveShop]:
    shop = start_loaded_shops(MODES, orders=2, inventory=2)
    try:
        yield shop
    finally:
        shop.stop()


def _groups_by_mode(expr: str) -> bool:
    return any("mode" in labels for labels in re.findall(r"by\s*\(([^)]*)\)", expr))


def test_comparison_panels_show_every_mode(
    both: LiveShop, shop_expressions: list[Expression]
) -> None:
    panels = [
        e
        for e in shop_expressions
        if e.dashboard == "mode-comparison.json" and not e.mesh_only and _groups_by_mode(e.expr)
    ]
    assert len(panels) >= 5
    missing = []
    for panel in panels:
        modes = {s["metric"].get("mode") for s in both.prometheus.query(panel.expr)}
        if modes != set(MODES):
            missing.append(f"{panel.source}: modes {sorted(m or '' for m in modes)}")
    assert missing == []


def test_imbalance_tells_the_modes_apart(both: LiveShop) -> None:
    series = both.prometheus.query("service:grpc_server_imbalance:ratio1m")
    by_mode = {(s["metric"]["mode"], s["metric"]["service"]): float(s["value"][1]) for s in series}
    print(f"imbalance by (mode, service): {by_mode}")
    for service in ("orders", "inventory"):
        # Two pods: pinned = 2.0, balanced near 1.0.
        assert by_mode[("clusterip", service)] > 1.7, by_mode
        assert by_mode[("headless", service)] < 1.3, by_mode
