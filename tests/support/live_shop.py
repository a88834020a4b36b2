"""Local shops under load with a real Prometheus scraping them, for the live PromQL
tests: every pod that should get calls has rates before a test queries."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest

from shop.local.cluster import LocalCluster
from shop.local.prometheus import PrometheusServer
from shop.v1 import gateway_pb2, gateway_pb2_grpc

# What each mode is on loopback, as the chart would set it: the client policy and label.
MODES = {
    "clusterip": {"SHOP_LB_POLICY": "pick_first", "SHOP_MODE": "clusterip"},
    "headless": {"SHOP_LB_POLICY": "round_robin", "SHOP_MODE": "headless"},
}
LOAD_SECONDS = 90  # upper bound; the load process is stopped once the checks are done


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


# ``start(["clusterip", "headless"], orders=3, inventory=3)`` -> the shops, loaded.
StartShops = Callable[..., LiveShop]


def inject_errors(cluster: LocalCluster, count: int = 20) -> None:
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
