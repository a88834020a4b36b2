"""A local shop under load with a real Prometheus scraping it, for the live PromQL tests.

Every expression the project ships (dashboard panels, recording rules, alerts) is
collected in tests/support/dashboards.py, with Grafana's variables replaced the way
Grafana sends them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

from shop.local.prometheus import start_prometheus

from ..support import dashboards
from ..support.clusters import ClusterFactory
from ..support.dashboards import RULE_FILES, Expression
from ..support.live_shop import LOAD_SECONDS, MODES, LiveShop, StartShops, inject_errors
from ..support.waiting import wait_until


@pytest.fixture(scope="session")
def shop_expressions() -> list[Expression]:
    return dashboards.shop_expressions()


@pytest.fixture(scope="module")
def start_loaded_shops(
    module_cluster_factory: ClusterFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartShops]:
    """``start(["clusterip", "headless"], orders=3, inventory=3)``: each mode's shop
    under load, one Prometheus scraping all of them with the chart's rules loaded;
    returns once every pod that should get calls has rates and rules evaluated."""
    started: list[LiveShop] = []

    def start(modes: Sequence[str], orders: int = 3, inventory: int = 3) -> LiveShop:
        clusters = [
            module_cluster_factory(
                gateway=1, orders=orders, inventory=inventory, extra_env=MODES[mode]
            )
            for mode in modes
        ]
        targets: dict[str, list[str]] = {}
        for cluster in clusters:
            for service, addresses in cluster.metrics_targets().items():
                targets.setdefault(service, []).extend(addresses)
        prometheus = start_prometheus(tmp_path_factory.mktemp("prometheus"), targets, RULE_FILES)
        shop = LiveShop(list(modes), prometheus, clusters)
        started.append(shop)
        for mode, cluster in zip(modes, clusters, strict=True):
            command = [
                sys.executable, "-m", "shop.cli.main", "load", "--target", cluster.gateway_target,
                "--token-key", str(cluster.credentials.issuer_key),
                "--lb-policy", MODES[mode]["SHOP_LB_POLICY"], "--concurrency", "8",
                "--duration", str(LOAD_SECONDS), "--no-progress", "--json",
            ]  # fmt: skip
            shop.loads.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        pods = sum(len(c.replicas) for c in clusters)
        wait_until(
            lambda: prometheus.targets_up() == pods, f"all {pods} replicas scraped", 60, poll_s=0.25
        )
        for cluster in clusters:
            inject_errors(cluster)
        # Pinned clients reach one pod per hop (gateway, orders, inventory); balanced ones all.
        expected = sum(
            3 if m == "clusterip" else len(c.replicas) for m, c in zip(modes, clusters, strict=True)
        )
        busy = "count by (instance) (rate(grpc_server_handled_total[1m]) > 0)"
        wait_until(
            lambda: len(prometheus.query(busy)) >= expected,
            "calls at every expected pod",
            60,
            poll_s=0.25,
        )
        time.sleep(5)  # let recording rules evaluate on top of those rates (1 s interval)
        return shop

    try:
        yield start
    finally:
        for shop in started:
            shop.stop()
