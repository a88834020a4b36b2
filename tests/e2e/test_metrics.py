"""Prometheus metrics every replica exposes, checked against the calls the test made.

The shop runs one replica per service so each count can be predicted exactly: the
test is the only client of the gateway, and the gateway the only client of orders.
"""

from __future__ import annotations

import importlib.metadata
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from shop.local.cluster import LocalCluster
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, inventory_pb2

from ..support.clusters import ClusterFactory
from ..support.waiting import wait_until

PLACED = 5
LISTED = 3

GATEWAY = "shop.v1.Gateway"
ORDERS = "shop.v1.Orders"
INVENTORY = "shop.v1.Inventory"
HEALTH = "grpc.health.v1.Health"


@dataclass
class Scrape:
    samples: list[Sample]
    families: dict[str, str]  # name -> type

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        matching = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(matching)

    def series(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]


def scrape(cluster: LocalCluster, service: str) -> Scrape:
    (replica,) = cluster.replicas_of(service)
    with urllib.request.urlopen(f"http://{replica.metrics_addr}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    families = list(text_string_to_metric_families(text))
    return Scrape(
        samples=[s for f in families for s in f.samples],
        families={f.name: f.type for f in families},
    )


@dataclass
class Served:
    cluster: LocalCluster
    order_ids: list[str]


def customer(i: int) -> str:
    """The customer (bearer token subject) who placed order ``i``."""
    return f"metrics-{i}"


@pytest.fixture(scope="module")
def served(module_cluster_factory: ClusterFactory) -> Iterator[Served]:
    """A shop that served a known mix of calls (and nothing else)."""
    running = module_cluster_factory(gateway=1, orders=1, inventory=1)
    with grpc.insecure_channel(running.gateway_target) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        order_ids = []
        for i in range(PLACED):
            order = gateway.PlaceOrder(
                gateway_pb2.PlaceOrderRequest(
                    items=[common_pb2.OrderItem(sku="MUG-003", quantity=1)],
                ),
                metadata=running.end_user_metadata(customer(i)),
                timeout=30,
            )
            order_ids.append(order.order_id)
        user = running.end_user_metadata(customer(0))
        for _ in range(LISTED):
            gateway.ListProducts(inventory_pb2.ListProductsRequest(), metadata=user, timeout=30)
        bad = gateway_pb2.PlaceOrderRequest(items=[])
        with pytest.raises(grpc.RpcError) as caught:
            gateway.PlaceOrder(bad, metadata=user, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            gateway.GetOrder(
                gateway_pb2.GetOrderRequest(order_id=str(uuid.uuid4())), metadata=user, timeout=30
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        yield Served(running, order_ids)


@pytest.fixture
def cluster(served: Served) -> LocalCluster:
    return served.cluster


def test_metric_families_and_types(cluster: LocalCluster) -> None:
    families = scrape(cluster, "gateway").families
    assert families["grpc_server_started"] == "counter"
    assert families["grpc_server_handled"] == "counter"
    assert families["grpc_server_handling_seconds"] == "histogram"
    assert families["grpc_server_in_flight"] == "gauge"
    assert families["grpc_client_started"] == "counter"
    assert families["grpc_client_handled"] == "counter"
    assert families["grpc_client_handling_seconds"] == "histogram"
    assert families["shop_instance_info"] == "gauge"


@pytest.mark.parametrize("service", ["gateway", "orders", "inventory"])
def test_instance_info_names_service_pod_and_version(cluster: LocalCluster, service: str) -> None:
    (info,) = scrape(cluster, service).series("shop_instance_info")
    assert info.labels == {
        "service": service,
        "pod": f"{service}-0",
        # Every shop distribution is released together, at the runtime kit's version.
        "version": importlib.metadata.version("grpc-shop-runtime"),
        "mode": "local",  # SHOP_MODE's default; the chart sets its mode
    }
    assert info.value == 1


def test_gateway_server_counts_match_the_calls(cluster: LocalCluster) -> None:
    m = scrape(cluster, "gateway")
    place = {"grpc_type": "unary", "grpc_service": GATEWAY, "grpc_method": "PlaceOrder"}
    assert m.value("grpc_server_started_total", **place) == PLACED + 1
    assert m.value("grpc_server_handled_total", **place, grpc_code="OK") == PLACED
    assert m.value("grpc_server_handled_total", **place, grpc_code="INVALID_ARGUMENT") == 1
    assert m.value("grpc_server_handled_total", **place) == PLACED + 1  # no other codes
    assert m.value("grpc_server_in_flight", **place) == 0
    get = {"grpc_service": GATEWAY, "grpc_method": "GetOrder"}
    # A downstream NOT_FOUND is counted under its own code, not UNKNOWN.
    assert m.value("grpc_server_handled_total", **get, grpc_code="NOT_FOUND") == 1
    listing = {"grpc_service": GATEWAY, "grpc_method": "ListProducts"}
    assert m.value("grpc_server_handled_total", **listing, grpc_code="OK") == LISTED


def test_handling_histogram_is_consistent(cluster: LocalCluster) -> None:
    m = scrape(cluster, "gateway")
    place = {"grpc_type": "unary", "grpc_service": GATEWAY, "grpc_method": "PlaceOrder"}
    buckets = m.series("grpc_server_handling_seconds_bucket", **place)
    assert len(buckets) >= 10
    ordered = sorted(buckets, key=lambda s: float(s.labels["le"]))
    counts = [b.value for b in ordered]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert ordered[-1].labels["le"] == "+Inf"
    assert ordered[-1].value == PLACED + 1
    assert m.value("grpc_server_handling_seconds_count", **place) == PLACED + 1
    total = m.value("grpc_server_handling_seconds_sum", **place)
    assert 0 < total < 60 * (PLACED + 1)
    # A placement crosses two more hops: it cannot all fit in the first bucket.
    assert ordered[0].value < PLACED + 1


def test_gateway_client_metrics_per_downstream_method(cluster: LocalCluster) -> None:
    m = scrape(cluster, "gateway")
    create = {"grpc_type": "unary", "grpc_service": ORDERS, "grpc_method": "CreateOrder"}
    # The invalid request never left the gateway.
    assert m.value("grpc_client_started_total", **create) == PLACED
    assert m.value("grpc_client_handled_total", **create, grpc_code="OK") == PLACED
    assert m.value("grpc_client_handling_seconds_count", **create) == PLACED
    assert m.value("grpc_client_handling_seconds_sum", **create) > 0
    listing = {"grpc_service": INVENTORY, "grpc_method": "ListProducts"}
    assert m.value("grpc_client_handled_total", **listing, grpc_code="OK") == LISTED
    get = {"grpc_service": ORDERS, "grpc_method": "GetOrder"}
    assert m.value("grpc_client_handled_total", **get, grpc_code="NOT_FOUND") == 1


def test_orders_server_and_client_metrics(cluster: LocalCluster) -> None:
    m = scrape(cluster, "orders")
    create = {"grpc_type": "unary", "grpc_service": ORDERS, "grpc_method": "CreateOrder"}
    assert m.value("grpc_server_handled_total", **create, grpc_code="OK") == PLACED
    assert m.value("grpc_server_handling_seconds_count", **create) == PLACED
    reserve = {"grpc_type": "unary", "grpc_service": INVENTORY, "grpc_method": "Reserve"}
    assert m.value("grpc_client_started_total", **reserve) == PLACED
    assert m.value("grpc_client_handled_total", **reserve, grpc_code="OK") == PLACED
    assert m.value("grpc_client_handling_seconds_count", **reserve) == PLACED


def test_inventory_metrics(cluster: LocalCluster) -> None:
    m = scrape(cluster, "inventory")
    reserve = {"grpc_service": INVENTORY, "grpc_method": "Reserve"}
    assert m.value("grpc_server_handled_total", **reserve, grpc_code="OK") == PLACED
    listing = {"grpc_service": INVENTORY, "grpc_method": "ListProducts"}
    assert m.value("grpc_server_handled_total", **listing, grpc_code="OK") == LISTED
    # Inventory calls nobody.
    assert not m.series("grpc_client_started_total")


def test_client_health_checks_show_as_open_watch_streams(cluster: LocalCluster) -> None:
    """round_robin's client-side health checking keeps one Health/Watch open per
    client channel and backend: the gateway's on orders; gateway's and orders' on
    inventory."""
    watch = {"grpc_type": "server_stream", "grpc_service": HEALTH, "grpc_method": "Watch"}
    assert scrape(cluster, "orders").value("grpc_server_in_flight", **watch) == 1
    assert scrape(cluster, "inventory").value("grpc_server_in_flight", **watch) == 2
    check = {"grpc_type": "unary", "grpc_service": HEALTH, "grpc_method": "Check"}
    # The launcher's readiness checks: infrastructure calls are counted too.
    assert scrape(cluster, "gateway").value("grpc_server_handled_total", **check) >= 1


def test_open_stream_is_in_flight_until_cancelled(served: Served) -> None:
    cluster = served.cluster
    order_id = served.order_ids[0]
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        stream = gateway.WatchOrder(
            gateway_pb2.WatchOrderRequest(order_id=order_id),
            metadata=cluster.end_user_metadata(customer(0)),
        )
        first = next(stream)
        assert first.order.order_id == order_id
        watch_gw = {
            "grpc_type": "server_stream",
            "grpc_service": GATEWAY,
            "grpc_method": "WatchOrder",
        }
        watch_orders = {
            "grpc_type": "server_stream",
            "grpc_service": ORDERS,
            "grpc_method": "WatchOrder",
        }
        wait_until(
            lambda: (
                scrape(cluster, "gateway").value("grpc_server_in_flight", **watch_gw) == 1
                and scrape(cluster, "orders").value("grpc_server_in_flight", **watch_orders) == 1
            ),
            "the stream to be in flight on gateway and orders",
            20.0,
        )
        gw = scrape(cluster, "gateway")
        assert gw.value("grpc_client_started_total", **watch_orders) == 1
        assert gw.value("grpc_server_handled_total", **watch_gw) == 0
        stream.cancel()

    def finished() -> bool:
        gw = scrape(cluster, "gateway")
        orders = scrape(cluster, "orders")
        return (
            gw.value("grpc_server_in_flight", **watch_gw) == 0
            and orders.value("grpc_server_in_flight", **watch_orders) == 0
            and gw.value("grpc_client_handled_total", **watch_orders) == 1
        )

    wait_until(finished, "the cancelled stream to finish on both hops", 20.0)
    gw = scrape(cluster, "gateway")
    assert gw.value("grpc_server_handled_total", **watch_gw, grpc_code="CANCELLED") == 1
    assert gw.value("grpc_client_handled_total", **watch_orders, grpc_code="CANCELLED") == 1
    assert gw.value("grpc_server_handling_seconds_count", **watch_gw) == 1
