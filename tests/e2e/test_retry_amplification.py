"""Retries at one hop only, with real replica processes (gateway -> orders ->
inventory) and the attempts counted where they arrive (each server's metrics).

When inventory is down, the hop that meets the outage (orders' channel to
inventory) retries; orders then answers UNAVAILABLE with ``grpc-retry-pushback-ms:
-1``, so the gateway's channel does not retry CreateOrder, which would repeat all of
orders' retries each time (the probe saw 100 client calls become 400 CreateOrder
attempts). Clients still see UNAVAILABLE, naming what is down.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shop.local.cluster import LocalCluster, Replica
from shop.local.postgres import PostgresServer
from shop.runtime.channels import RETRY_THROTTLING
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from ..support.clusters import ClusterFactory
from ..support.tcp_proxy import TcpProxy

CALLS = 20
ATTEMPTS = 4  # SHOP_RETRY_MAX_ATTEMPTS' default


def attempts(replica: Replica, method: str) -> tuple[float, float]:
    """(attempts started, attempts that were retries) of ``method`` at ``replica``."""
    with urllib.request.urlopen(f"http://{replica.metrics_addr}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    totals = {"grpc_server_started_total": 0.0, "grpc_server_retried_total": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals and sample.labels.get("grpc_method") == method:
                totals[sample.name] += sample.value
    return totals["grpc_server_started_total"], totals["grpc_server_retried_total"]


def place_orders(cluster: LocalCluster, calls: int) -> Iterator[grpc.RpcError]:
    """``calls`` PlaceOrder calls that must fail; yields each error."""
    metadata = cluster.end_user_metadata("retry-probe")
    request = gateway_pb2.PlaceOrderRequest(items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)])
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        for _ in range(calls):
            with pytest.raises(grpc.RpcError) as caught:
                gateway.PlaceOrder(request, metadata=metadata, timeout=30)
            yield caught.value


def test_inventory_down_costs_one_create_order_attempt_per_call(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(gateway=1, orders=1, inventory=1)
    (inventory,) = cluster.replicas_of("inventory")
    cluster.signal_replica(inventory)
    assert cluster.wait_exit(inventory, timeout_s=30) is not None
    for error in place_orders(cluster, CALLS):
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == "inventory is unavailable; try again later"
    (orders,) = cluster.replicas_of("orders")
    (gateway,) = cluster.replicas_of("gateway")
    assert attempts(gateway, "PlaceOrder") == (CALLS, 0)
    # One CreateOrder attempt per client call: the gateway did not retry what orders
    # had already retried (before: 4 per call).
    assert attempts(orders, "CreateOrder") == (CALLS, 0)


@pytest.mark.postgres
def test_inventory_database_down_is_retried_by_orders_only(
    cluster_factory: ClusterFactory, postgres_server: PostgresServer
) -> None:
    """Inventory is up but its PostgreSQL is not: inventory answers UNAVAILABLE,
    orders' channel retries Reserve (throttled), the gateway retries nothing."""
    url = postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    proxy = TcpProxy.for_url(url).start()
    try:
        cluster = cluster_factory(
            gateway=1,
            orders=1,
            inventory=1,
            service_env={"inventory": {"DATABASE_URL": proxy.url_through(url)}},
        )
        proxy.cut()
        for error in place_orders(cluster, CALLS):
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error.details() == ("the inventory database is unavailable; try again later")
        (orders,) = cluster.replicas_of("orders")
        (inventory,) = cluster.replicas_of("inventory")
        assert attempts(orders, "CreateOrder") == (CALLS, 0)
        reserve, retried = attempts(inventory, "Reserve")
        # Calls get all their attempts until half the channel's retry tokens are
        # spent (50 failed attempts), then throttling leaves one attempt per call.
        assert CALLS <= reserve <= CALLS + int(RETRY_THROTTLING["maxTokens"]) // 2, reserve
        assert reserve < CALLS * ATTEMPTS, reserve
        assert retried == reserve - CALLS and retried >= 1
        log = inventory.log_path.read_text()
        assert "Traceback" not in log
        assert log.count("the inventory database is unavailable") <= 2
    finally:
        proxy.close()
