"""WatchOrder fed by one change feed per orders replica (``shop.orders.watch``).

Watchers sit on orders replicas of their own (``watcher``), each with a hub the test
can see, on the same database as the ``shop`` fixture's replica, through which the
orders are placed and cancelled: a change made through another replica must reach
them. Query counts come from the statements the database module logs, not from timing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shop.api.services import ORDERS as ORDERS_SERVICE
from shop.credentials import LocalCredentials
from shop.orders.app import OrdersWiring
from shop.orders.app import make_setup as orders_setup
from shop.orders.settings import OrdersSettings
from shop.orders.watch import OrderWatchHub
from shop.runtime.config import DatabaseSettings
from shop.runtime.database import sql_log
from shop.runtime.streams import StreamConfig
from shop.v1 import common_pb2, orders_pb2, orders_pb2_grpc

from ..support.auth import caller_metadata, channel_with
from ..support.servers import StartServer
from ..support.waiting import wait_until_async

CONFIRMED = common_pb2.ORDER_STATUS_CONFIRMED
CANCELLING = common_pb2.ORDER_STATUS_CANCELLING
CANCELLED = common_pb2.ORDER_STATUS_CANCELLED
# Long enough that no test here ends a stream by its lifetime unless it means to.
LONG = StreamConfig(max_per_replica=1000, max_per_caller=10, max_lifetime_s=600)


@dataclass
class Watcher:
    """An orders replica for watching: its stub and its hub."""

    orders: orders_pb2_grpc.OrdersStub
    hub: OrderWatchHub


StartWatcher = Callable[..., Awaitable[Watcher]]


@pytest.fixture
async def start_watcher(
    shop: Any, start_server: StartServer, credentials: LocalCredentials
) -> AsyncIterator[StartWatcher]:
    """``await start_watcher(interval_s=0.05, streams=LONG)``: another orders replica
    on the shop's database and inventory."""
    async with AsyncExitStack() as stack:
        count = 0

        async def start(interval_s: float = 0.05, streams: StreamConfig = LONG) -> Watcher:
            nonlocal count
            count += 1
            wirings: list[OrdersWiring] = []
            # The production setup; its reconciler is kept out of the way (it would add
            # queries to the ones a test counts), and the feed polls at the test's pace.
            settings = OrdersSettings(
                inventory_target=f"127.0.0.1:{shop.inventory_port}",
                database=DatabaseSettings(shop.database_url, wait_s=10.0),
                downstream_timeout_s=5.0,
                streams=streams,
                reconcile_interval_s=3600.0,
                watch_interval_s=interval_s,
            )
            server = await start_server(
                "orders",
                orders_setup(settings, on_wired=wirings.append),
                pod_name=f"orders-w{count}",
            )
            channel = await stack.enter_async_context(
                channel_with(
                    server.address, caller_metadata(credentials, "gateway", ORDERS_SERVICE)
                )
            )
            return Watcher(orders_pb2_grpc.OrdersStub(channel), wirings[0].hub)

        yield start


async def place(shop: Any, key: str, customer: str = "cust-w") -> common_pb2.Order:
    order: common_pb2.Order = await shop.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            idempotency_key=key,
            customer_id=customer,
            items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)],
        ),
        timeout=30,
    )
    assert order.status == CONFIRMED
    return order


def ref(order: common_pb2.Order) -> orders_pb2.OrderRef:
    return orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id)


async def until(condition: Callable[[], bool], what: str) -> None:
    """The watch hub's bookkeeping settles within milliseconds: a short poll."""
    await wait_until_async(condition, what, 20, poll_s=0.01)


async def rest_of(call: Any) -> list[int]:
    statuses = []
    while (item := await call.read()) is not grpc.aio.EOF:
        statuses.append(item.order.status)
    return statuses


@contextmanager
def statements_on_orders() -> Iterator[list[str]]:
    """Every SQL statement this process sends that reads or writes the orders table."""
    seen: list[str] = []
    pattern = re.compile(r"\borders\b(?!_)")

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if pattern.search(statement := record.getMessage()):
                seen.append(statement)

    handler, level = Record(), sql_log.level
    sql_log.addHandler(handler)
    sql_log.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        sql_log.removeHandler(handler)
        sql_log.setLevel(level)


async def test_a_change_made_through_another_replica_reaches_the_watcher(
    shop: Any, start_watcher: StartWatcher
) -> None:
    watcher = await start_watcher()
    order = await place(shop, "w-other-replica")
    call = watcher.orders.WatchOrder(ref(order), timeout=60)
    first = await call.read()
    assert (first.order.order_id, first.order.status) == (order.order_id, CONFIRMED)
    # Cancelled through the shop's own replica, which shares only the database.
    cancelled = await shop.orders.CancelOrder(ref(order), timeout=30)
    assert cancelled.status == CANCELLED
    statuses = await rest_of(call)
    assert statuses[-1] == CANCELLED and set(statuses[:-1]) <= {CANCELLING}
    assert await call.code() == grpc.StatusCode.OK
    # The last stream gone, the hub forgets the order and stops its loop.
    await until(lambda: watcher.hub.watched_orders == 0, "the hub to forget the order")


async def test_many_watchers_of_one_order_cost_one_query_per_poll(
    shop: Any, start_watcher: StartWatcher
) -> None:
    # The hub's own loop never comes round here: the test drives every poll itself.
    watcher = await start_watcher(interval_s=3600)
    order = await place(shop, "w-many")
    calls = [watcher.orders.WatchOrder(ref(order), timeout=60) for _ in range(50)]
    firsts = await asyncio.gather(*(call.read() for call in calls))
    assert {f.order.status for f in firsts} == {CONFIRMED}
    await until(lambda: watcher.hub.subscribers == 50, "50 subscribers")
    assert watcher.hub.watched_orders == 1

    with statements_on_orders() as seen:
        for _ in range(3):
            assert await watcher.hub.poll_once() == 0
    # Nothing changed: one stamp query per poll, not one (or two) per watcher.
    assert len(seen) == 3, seen

    await shop.orders.CancelOrder(ref(order), timeout=30)
    with statements_on_orders() as seen:
        pushed = await watcher.hub.poll_once()
    assert pushed == 50
    # The stamps, then the one changed row (its items come from order_items).
    assert len(seen) == 2, seen
    for call in calls:
        assert await rest_of(call) == [CANCELLED]
        assert await call.code() == grpc.StatusCode.OK
    await until(lambda: watcher.hub.subscribers == 0, "every subscriber to leave")


async def test_watchers_of_many_orders_share_one_query(
    shop: Any, start_watcher: StartWatcher
) -> None:
    watcher = await start_watcher(interval_s=3600)
    orders = [await place(shop, f"w-spread-{i}", customer=f"cust-{i}") for i in range(5)]
    calls = [watcher.orders.WatchOrder(ref(order), timeout=60) for order in orders]
    await asyncio.gather(*(call.read() for call in calls))
    await until(lambda: watcher.hub.watched_orders == 5, "5 watched orders")
    with statements_on_orders() as seen:
        await watcher.hub.poll_once()
    assert len(seen) == 1, seen
    for call in calls:
        call.cancel()


async def test_a_stream_ends_ok_after_its_lifetime_and_a_resubscribe_starts_current(
    shop: Any, start_watcher: StartWatcher
) -> None:
    watcher = await start_watcher(
        streams=StreamConfig(max_per_replica=10, max_per_caller=10, max_lifetime_s=0.5)
    )
    order = await place(shop, "w-lifetime")
    call = watcher.orders.WatchOrder(ref(order), timeout=60)
    assert (await call.read()).order.status == CONFIRMED
    # No change, and still the stream ends, cleanly, well before the call's deadline.
    assert await rest_of(call) == []
    assert await call.code() == grpc.StatusCode.OK
    # What happened meanwhile is not lost: a new stream starts with the current state.
    await shop.orders.CancelOrder(ref(order), timeout=30)
    again = watcher.orders.WatchOrder(ref(order), timeout=60)
    assert await rest_of(again) == [CANCELLED]
    assert await again.code() == grpc.StatusCode.OK


async def test_streams_beyond_the_replica_cap_are_resource_exhausted(
    shop: Any, start_watcher: StartWatcher
) -> None:
    watcher = await start_watcher(
        streams=StreamConfig(max_per_replica=2, max_per_caller=1, max_lifetime_s=600)
    )
    order = await place(shop, "w-cap")
    # Orders' callers are gateway replicas: the per-caller cap is the gateway's to
    # apply, so one caller here gets up to the replica's cap.
    held = [watcher.orders.WatchOrder(ref(order), timeout=60) for _ in range(2)]
    await asyncio.gather(*(call.read() for call in held))
    refused = watcher.orders.WatchOrder(ref(order), timeout=60)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refused.read()
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "SHOP_STREAMS_MAX_PER_REPLICA=2" in (error.details() or "")
    status = rpc_status.from_call(error)
    assert status is not None
    failure = error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject == "orders-replica"

    # A slot is free again as soon as a stream ends.
    held[0].cancel()
    await until(lambda: watcher.hub.subscribers == 1, "the cancelled stream to leave")
    reopened = watcher.orders.WatchOrder(ref(order), timeout=60)
    assert (await reopened.read()).order.status == CONFIRMED
    for call in (held[1], reopened):
        call.cancel()
