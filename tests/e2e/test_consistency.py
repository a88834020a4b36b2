"""Stock consistency through a real local cluster (one process per replica, each on
its own loopback IP), on SQLite (a file per service, the default) and PostgreSQL:
scarce stock is never oversold however many replicas race for it, and retries with
an idempotency key place one order and take stock once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import ClusterSpec, LocalCluster, running_cluster
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, inventory_pb2, inventory_pb2_grpc

from ..support.auth import caller_metadata, channel_with
from ..support.catalog import stock_of

CONFIRMED = common_pb2.ORDER_STATUS_CONFIRMED
# Each call gets all the time it needs: a slow shared machine must not turn into errors.
CALL_TIMEOUT_S = 120


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """gateway x1, orders x3, inventory x3, shared by this module's tests per database."""
    database_url = ""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        database_url = server.create_database(f"e2e_{uuid.uuid4().hex[:12]}")
    data_dir: Path = tmp_path_factory.mktemp(f"consistency-{request.param}")
    spec = ClusterSpec(
        replicas={"gateway": 1, "orders": 3, "inventory": 3},
        plan=AddressPlan(net=free_net()),
        data_dir=data_dir,
        database_url=database_url,
        # Correctness, not latency, is under test: a busy shared machine must not turn
        # slow Reserves (5 s by default) into DEADLINE_EXCEEDED.
        extra_env={"SHOP_DOWNSTREAM_TIMEOUT_S": "30"},
    )
    with running_cluster(spec, timeout_s=90) as started:
        yield started


class Client:
    """Calls the gateway as any customer (each with their own bearer token) and
    inventory as orders does, with an administrator's token for SetStock."""

    def __init__(
        self, gateway: grpc.aio.Channel, inventory: grpc.aio.Channel, cluster: LocalCluster
    ) -> None:
        self.gateway = gateway_pb2_grpc.GatewayStub(gateway)
        self.inventory = inventory_pb2_grpc.InventoryStub(inventory)
        self._cluster = cluster
        self._tokens: dict[str, tuple[tuple[str, str], ...]] = {}

    def user(self, customer: str) -> tuple[tuple[str, str], ...]:
        """``customer``'s call metadata (one token per customer, minted once)."""
        if customer not in self._tokens:
            self._tokens[customer] = self._cluster.end_user_metadata(customer)
        return self._tokens[customer]

    async def stock(self, sku: str) -> int:
        reply = await self.inventory.ListProducts(
            inventory_pb2.ListProductsRequest(page_size=200), timeout=30
        )
        return stock_of(reply, sku)

    async def place(
        self,
        customer: str,
        sku: str,
        quantity: int,
        key: str = "",
        deadline_s: float = CALL_TIMEOUT_S,
    ) -> tuple[Any, dict[str, str]]:
        """(order, route) for an accepted order; raises AioRpcError otherwise."""
        call = self.gateway.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(
                items=[common_pb2.OrderItem(sku=sku, quantity=quantity)],
                idempotency_key=key,
            ),
            metadata=self.user(customer),
            timeout=deadline_s,
        )
        order = await call
        return order, parse_route(dict(await call.trailing_metadata())[ROUTE_TRAILER])

    async def orders_of(self, customer: str) -> list[Any]:
        found: list[Any] = []
        token = ""
        while True:
            reply = await self.gateway.ListOrders(
                gateway_pb2.ListOrdersRequest(page_size=100, page_token=token),
                metadata=self.user(customer),
                timeout=30,
            )
            found += reply.orders
            token = reply.next_page_token
            if not token:
                return found


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[Client]:
    async with (
        grpc.aio.insecure_channel(cluster.gateway_target) as gateway,
        channel_with(
            cluster.target("inventory"),
            caller_metadata(cluster.credentials, "orders", INVENTORY_SERVICE),
            cluster.end_user_metadata("stock-admin", admin=True),
            options=[("grpc.lb_policy_name", "round_robin")],
        ) as inventory,
    ):
        yield Client(gateway, inventory, cluster)


async def connected_everywhere(client: Client, cluster: LocalCluster) -> None:
    """Places orders of a plentiful SKU until every orders and inventory replica has
    served one: the replicas' channels connect on their first calls, and round_robin
    picks only backends already connected, so a burst sent into a cluster that just
    started lands on whichever connected first (in CI once all 50 scarce units went
    to inventory-0 before the others were connected)."""
    sku = f"WARM-{uuid.uuid4().hex[:6]}"
    await client.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku=sku, stock=10_000, price_cents=100), timeout=30
    )
    wanted = {
        "orders": {r.pod for r in cluster.replicas_of("orders")},
        "inventory": {r.pod for r in cluster.replicas_of("inventory")},
    }
    seen: dict[str, set[str]] = {"orders": set(), "inventory": set()}
    for _ in range(50):  # bounded: a healthy cluster needs a round or two
        placed = await asyncio.gather(*(client.place("warm-up", sku, 1) for _ in range(6)))
        for _, route in placed:
            for hop in seen:
                seen[hop].add(route[hop])
        if seen == wanted:
            return
    raise AssertionError(f"not every replica served a call: {seen}")


@pytest.mark.timeout(240)
async def test_scarce_stock_is_never_oversold(client: Client, cluster: LocalCluster) -> None:
    await connected_everywhere(client, cluster)
    sku, stock, buyers = f"SCARCE-{uuid.uuid4().hex[:6]}", 50, 200
    product = await client.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku=sku, stock=stock, name="Scarce", price_cents=700),
        timeout=30,
    )
    assert product.stock == stock

    results = await asyncio.gather(
        *(client.place(f"crowd-{n % 20}", sku, 1, key=f"crowd-{sku}-{n}") for n in range(buyers)),
        return_exceptions=True,
    )

    accepted = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    unexpected = [r for r in results if not isinstance(r, tuple | grpc.aio.AioRpcError)]
    assert not unexpected, unexpected[:3]
    codes = Counter(e.code() for e in refused)
    assert codes == {grpc.StatusCode.FAILED_PRECONDITION: buyers - stock}, codes
    assert len(accepted) == stock
    for error in refused[:10]:
        status = rpc_status.from_call(error)
        assert status is not None
        failure = error_details_pb2.PreconditionFailure()
        assert status.details[0].Unpack(failure)
        assert [(v.type, v.subject) for v in failure.violations] == [("STOCK", sku)]
    assert await client.stock(sku) == 0

    orders = [order for order, _ in accepted]
    assert len({o.order_id for o in orders}) == stock
    # Each order read back by its own customer.
    fetched = await asyncio.gather(
        *(client.gateway.GetOrder(gateway_pb2.GetOrderRequest(order_id=o.order_id),
                                  metadata=client.user(o.customer_id), timeout=60)
          for o in orders)
    )  # fmt: skip
    assert {o.status for o in fetched} == {CONFIRMED}
    assert {o.total_cents for o in fetched} == {700}
    assert [(o.order_id, o.customer_id) for o in fetched] == [
        (o.order_id, o.customer_id) for o in orders
    ]

    # Every hop reported its pod: the work was spread over the replicas.
    routes = [route for _, route in accepted]
    inventory_pods = Counter(route["inventory"] for route in routes)
    orders_pods = Counter(route["orders"] for route in routes)
    assert set(inventory_pods) <= {r.pod for r in cluster.replicas_of("inventory")}
    assert len(inventory_pods) > 1, f"Reserve served by one replica only: {inventory_pods}"
    assert len(orders_pods) > 1, f"CreateOrder served by one replica only: {orders_pods}"
    assert {route["gateway"] for route in routes} == {"gateway-0"}


@pytest.mark.timeout(180)
async def test_retries_with_one_key_place_one_order(client: Client) -> None:
    sku = f"IDEM-{uuid.uuid4().hex[:6]}"
    customer = f"retrier-{uuid.uuid4().hex[:6]}"
    await client.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku=sku, stock=100, price_cents=450), timeout=30
    )
    key = f"idem-{uuid.uuid4()}"
    burst = await asyncio.gather(*(client.place(customer, sku, 3, key=key) for _ in range(20)))
    later = [await client.place(customer, sku, 3, key=key) for _ in range(3)]
    orders = [order for order, _ in (*burst, *later)]
    assert len({o.order_id for o in orders}) == 1
    assert {(o.status, o.total_cents) for o in orders} == {(CONFIRMED, 3 * 450)}
    assert await client.stock(sku) == 97
    assert [o.order_id for o in await client.orders_of(customer)] == [orders[0].order_id]


@pytest.mark.timeout(240)
async def test_retries_after_deadlines_take_stock_once_per_key(client: Client) -> None:
    """Clients that give up mid-saga and retry with their key end with exactly one
    order per key; nothing is left reserved by the abandoned attempts."""
    sku = f"HASTY-{uuid.uuid4().hex[:6]}"
    customer = f"hasty-{uuid.uuid4().hex[:6]}"
    await client.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku=sku, stock=1000, price_cents=100), timeout=30
    )
    keys = [f"hasty-{sku}-{n}" for n in range(40)]
    # Deadlines from 2 ms to about 1 s cut the saga at every step along the way.
    first = await asyncio.gather(
        *(client.place(customer, sku, 1, key=key, deadline_s=0.002 * (1 + n) ** 1.7)
          for n, key in enumerate(keys)),
        return_exceptions=True,
    )  # fmt: skip
    codes = Counter(
        "OK"
        if isinstance(r, tuple)
        else r.code().name
        if isinstance(r, grpc.aio.AioRpcError)
        else r
        for r in first
    )
    assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"}, codes
    assert codes["DEADLINE_EXCEEDED"] > 0, "no deadline was short enough to test anything"

    retried = await asyncio.gather(*(client.place(customer, sku, 1, key=key) for key in keys))
    order_ids = {order.order_id for order, _ in retried}
    assert len(order_ids) == len(keys)
    for result, (order, _) in zip(first, retried, strict=True):
        if isinstance(result, tuple):
            assert result[0].order_id == order.order_id
    assert await client.stock(sku) == 1000 - len(keys)
    listed = await client.orders_of(customer)
    assert {o.order_id for o in listed} == order_ids
    assert {o.status for o in listed} == {CONFIRMED}
