"""A local shop under load with a real Prometheus scraping it, for the live PromQL tests.

Every expression the project ships (dashboard panels, recording rules, alerts) is
collected here, with Grafana's variables replaced the way Grafana sends them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from shop.local.cluster import LocalCluster
from shop.local.prometheus import PrometheusServer, start_prometheus
from shop.v1 import gateway_pb2, gateway_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "helm" / "grpc-shop" / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "helm" / "grpc-shop" / "rules").glob("*.yaml"))
SERVICES = ("gateway", "orders", "inventory")
# What each mode is on loopback, as the chart would set it: the client policy and label.
MODES = {
    "clusterip": {"SHOP_LB_POLICY": "pick_first", "SHOP_MODE": "clusterip"},
    "headless": {"SHOP_LB_POLICY": "round_robin", "SHOP_MODE": "headless"},
}
LOAD_SECONDS = 90  # upper bound; the load process is stopped once the checks are done


@dataclass(frozen=True)
class Expression:
    source: str  # "balancing.json: Calls/s per pod" or "grpc-shop.rules.yaml: record ..."
    expr: str
    kind: str  # "panel", "record" or "alert"
    dashboard: str = ""

    @property
    def mesh_only(self) -> bool:
        return "istio_" in self.expr

    @property
    def name(self) -> str:
        """The rule's name (record or alert), for rule expressions."""
        return self.source.split(f"{self.kind} ", 1)[-1]


def as_grafana_sends(expr: str) -> str:
    """Grafana's variables replaced the way Grafana would for 'All' and a 1m step."""
    expr = re.sub(r"\$\{?__rate_interval\}?", "1m", expr)
    expr = re.sub(r"\$\{?__interval\}?", "15s", expr)
    expr = re.sub(r"\$\{?__range\}?", "5m", expr)
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", ".*", expr)


def _panel_expressions(path: Path) -> Iterator[Expression]:
    dashboard = json.loads(path.read_text())
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))  # collapsed rows
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield Expression(
                    f"{path.name}: {panel.get('title')}",
                    as_grafana_sends(target["expr"]),
                    "panel",
                    path.name,
                )


def _rule_expressions(path: Path) -> Iterator[Expression]:
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            yield Expression(f"{path.name}: {kind} {rule.get(kind)}", rule["expr"], kind)


@pytest.fixture(scope="session")
def shop_expressions() -> list[Expression]:
    found = [e for path in DASHBOARDS for e in _panel_expressions(path)]
    found += [e for path in RULE_FILES for e in _rule_expressions(path)]
    return found


@dataclass
class LiveShop:
    """Shops in one or more modes, all scraped by one Prometheus."""

    modes: list[str]
    prometheus: PrometheusServer
    clusters: list[LocalCluster] = field(default_factory=list)
    loads: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        (mode,) = self.modes
        return mode

    def stop(self) -> None:
        for load in self.loads:
            load.kill()
            load.wait(timeout=30)
        self.prometheus.stop()
        for cluster in self.clusters:
            cluster.stop()


def _inject_errors(cluster: LocalCluster, count: int = 20) -> None:
    """Calls that fail (an unknown order: NOT_FOUND at the gateway and at orders),
    so error panels show their series instead of 'no data'."""
    user = cluster.end_user_metadata("error-injector")
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for _ in range(count):
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetOrder(
                    gateway_pb2.GetOrderRequest(order_id=str(uuid.uuid4())),
                    metadata=user,
                    timeout=5,
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


StartShops = Callable[..., LiveShop]


@pytest.fixture(scope="module")
def start_loaded_shops(
    module_cluster_factory: Any, tmp_path_factory: pytest.TempPathFactory
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
        _wait_until(lambda: prometheus.targets_up() == pods, 60, f"all {pods} replicas scraped")
        for cluster in clusters:
            _inject_errors(cluster)
        # Pinned clients reach one pod per hop (gateway, orders, inventory); balanced ones all.
        expected = sum(
            3 if m == "clusterip" else len(c.replicas) for m, c in zip(modes, clusters, strict=True)
        )
        busy = "count by (instance) (rate(grpc_server_handled_total[1m]) > 0)"
        _wait_until(
            lambda: len(prometheus.query(busy)) >= expected, 60, "calls at every expected pod"
        )
        time.sleep(5)  # let recording rules evaluate on top of those rates (1 s interval)
        return shop

    try:
        yield start
    finally:
        for shop in started:
            shop.stop()
