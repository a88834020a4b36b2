"""The OrderPlacement saga (PENDING -> Reserve -> CONFIRMED) over real gRPC, on
SQLite and PostgreSQL: idempotency, refusals, and what happens when the outcome of
a Reserve is unknown.

``shop`` / ``start_shop`` come from this folder's conftest (orders and inventory
servers on loopback run by the runtime's ``serve``).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from shop.inventory.servicer import InventoryServicer
from shop.inventory.store import InventoryStore
from shop.orders.reconciler import Reconciler
from shop.orders.store import (
    CANCELLED,
    CANCELLING,
    CONFIRMED,
    FAILED,
    REJECTED,
    ROLLING_BACK,
    Item,
    OrderRecord,
)
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import common_pb2, inventory_pb2, orders_pb2

from ..support.status import detail_of, rich_status
from ..support.waiting import wait_until_async


def items(*pairs: tuple[str, int]) -> list[common_pb2.OrderItem]:
    return [common_pb2.OrderItem(sku=sku, quantity=quantity) for sku, quantity in pairs]


def create(key: str, *pairs: tuple[str, int], customer: str = "cust-1") -> Any:
    return orders_pb2.CreateOrderRequest(
        idempotency_key=key, customer_id=customer, items=items(*pairs)
    )


async def test_confirmed_order_is_priced_by_inventory(shop: Any) -> None:
    await shop.set_stock("SAGA-A", 10, price_cents=250)
    await shop.set_stock("SAGA-B", 5, price_cents=1000)
    call = shop.orders.CreateOrder(create("k-priced", ("SAGA-B", 1), ("SAGA-A", 2)), timeout=30)
    order = await call
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED
    assert order.total_cents == 2 * 250 + 1000
    assert uuid.UUID(order.order_id)
    assert order.customer_id == "cust-1"
    assert sorted((i.sku, i.quantity) for i in order.items) == [("SAGA-A", 2), ("SAGA-B", 1)]
    assert order.created_at and order.updated_at >= order.created_at
    route = parse_route(dict(await call.trailing_metadata())[ROUTE_TRAILER])
    assert route == {"orders": "orders-t0", "inventory": "inventory-t0"}
    assert await shop.stock("SAGA-A") == 8
    assert await shop.stock("SAGA-B") == 4
    fetched = await shop.orders.GetOrder(
        orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id), timeout=10
    )
    assert fetched == order


async def test_retries_of_a_key_return_one_order_and_reserve_once(shop: Any) -> None:
    await shop.set_stock("SAGA-R", 50)
    first = await shop.orders.CreateOrder(
        create("k-retry", ("SAGA-R", 3), ("ESP-001", 1)), timeout=30
    )
    # The same order listed in another item order is the same payload.
    again = await shop.orders.CreateOrder(
        create("k-retry", ("ESP-001", 1), ("SAGA-R", 3)), timeout=30
    )
    burst = await asyncio.gather(
        *(shop.orders.CreateOrder(create("k-retry", ("SAGA-R", 3), ("ESP-001", 1)), timeout=30)
          for _ in range(8))
    )  # fmt: skip
    assert {o.order_id for o in (first, again, *burst)} == {first.order_id}
    assert {o.status for o in burst} == {common_pb2.ORDER_STATUS_CONFIRMED}
    assert await shop.stock("SAGA-R") == 47
    assert await shop.stock("ESP-001") == 99
    record = await shop.record("k-retry")
    assert (record.status, record.attempt) == (CONFIRMED, 1)


async def test_concurrent_first_requests_with_one_key_reserve_once(shop: Any) -> None:
    await shop.set_stock("SAGA-C", 20)
    orders = await asyncio.gather(
        *(shop.orders.CreateOrder(create("k-race", ("SAGA-C", 2)), timeout=30) for _ in range(10))
    )
    assert len({o.order_id for o in orders}) == 1
    assert await shop.stock("SAGA-C") == 18


@pytest.mark.parametrize(
    ("changed", "customer"),
    [((("SAGA-P", 2),), "cust-1"), ((("SAGA-P", 1), ("ESP-001", 1)), "cust-1"),
     ((("SAGA-P", 1),), "cust-2")],
    ids=["quantity", "items", "customer"],
)  # fmt: skip
async def test_key_reused_for_another_order_is_invalid_argument(
    shop: Any, changed: tuple[tuple[str, int], ...], customer: str
) -> None:
    await shop.set_stock("SAGA-P", 10)
    original = await shop.orders.CreateOrder(create("k-reuse", ("SAGA-P", 1)), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(create("k-reuse", *changed, customer=customer), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = detail_of(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in request.field_violations] == ["idempotency_key"]
    assert await shop.stock("SAGA-P") == 9
    assert await shop.stock("ESP-001") == 100
    assert (await shop.record("k-reuse")).order_id == original.order_id


async def test_out_of_stock_is_rejected_and_replayed_without_reserving(shop: Any) -> None:
    await shop.set_stock("SAGA-S", 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(create("k-short", ("SAGA-S", 2)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = detail_of(caught.value, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("STOCK", "SAGA-S")]
    record = await shop.record("k-short")
    assert (record.status, record.failure_code) == (REJECTED, "FAILED_PRECONDITION")
    # A rejected attempt is not an order.
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await shop.orders.GetOrder(
            orders_pb2.OrderRef(order_id=record.order_id, customer_id=record.customer_id),
            timeout=30,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # Stock arrives; a retry of the key still gets the recorded answer and takes nothing.
    await shop.set_stock("SAGA-S", 10)
    with pytest.raises(grpc.aio.AioRpcError) as replayed:
        await shop.orders.CreateOrder(create("k-short", ("SAGA-S", 2)), timeout=30)
    assert replayed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert replayed.value.details() == caught.value.details()
    assert rich_status(replayed.value) == rich_status(caught.value)
    assert await shop.stock("SAGA-S") == 10
    # A new key is a new order and succeeds now.
    placed = await shop.orders.CreateOrder(create("k-short-2", ("SAGA-S", 2)), timeout=30)
    assert placed.status == common_pb2.ORDER_STATUS_CONFIRMED
    assert await shop.stock("SAGA-S") == 8


async def test_unknown_sku_is_rejected_as_not_found(shop: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(create("k-nosku", ("ESP-001", 1), ("NOPE-1", 1)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = detail_of(caught.value, error_details_pb2.ResourceInfo)
    assert info.resource_name == "NOPE-1"
    assert (await shop.record("k-nosku")).status == REJECTED
    assert await shop.stock("ESP-001") == 100


@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        ({"customer_id": "c", "items": items(("ESP-001", 1))}, ["idempotency_key"]),
        ({"idempotency_key": "k 1", "items": items(("ESP-001", 1))},
         ["idempotency_key", "customer_id"]),
        ({"idempotency_key": "k", "customer_id": "c"}, ["items"]),
        ({"idempotency_key": "k", "customer_id": "c", "items": items(("ESP-001", 1001))},
         ["items[0].quantity"]),
    ],
)  # fmt: skip
async def test_create_order_validates_its_input(
    shop: Any, request_args: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(orders_pb2.CreateOrderRequest(**request_args), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = detail_of(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in request.field_violations] == fields
    assert await shop.stock("ESP-001") == 100


class GatedInventory(InventoryServicer):
    """Reserves for real, then holds the answer until the test opens the gate."""

    def __init__(self, store: InventoryStore) -> None:
        super().__init__(store)
        self.gate = asyncio.Event()
        self.reserved = asyncio.Event()

    async def Reserve(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response = await super().Reserve(request, context)
        self.reserved.set()
        await self.gate.wait()
        return response


async def start_gated_shop(start_shop: Any, timeout_s: float) -> tuple[Any, list[GatedInventory]]:
    """A shop whose inventory is a GatedInventory (``gated[0]`` once it started)."""
    gated: list[GatedInventory] = []

    def servicer(store: InventoryStore) -> InventoryServicer:
        gated.append(GatedInventory(store))
        return gated[-1]

    return await start_shop(timeout_s=timeout_s, servicer=servicer), gated


async def test_reserve_past_its_deadline_is_released_and_retry_starts_fresh(
    start_shop: Any,
) -> None:
    # Orders gives Reserve 2 s: ample to take the stock, then the gate makes it late.
    shop, gated = await start_gated_shop(start_shop, timeout_s=2.0)
    await shop.set_stock("SAGA-D", 10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(create("k-slow", ("SAGA-D", 3)), timeout=30)
    # Inventory took the stock, but orders never heard back in time.
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gated[0].reserved.is_set()
    record = await shop.record("k-slow")
    assert (record.status, record.attempt) == (FAILED, 1)
    assert await shop.stock("SAGA-D") == 10, "the unknown-outcome reservation was not released"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await shop.orders.GetOrder(
            orders_pb2.OrderRef(order_id=record.order_id, customer_id=record.customer_id),
            timeout=30,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    gated[0].gate.set()
    # The first attempt's reservation id is spent...
    again = await shop.inventory.Release(
        inventory_pb2.ReleaseRequest(reservation_id=record.reservation_id), timeout=10
    )
    assert again.released is False
    # ...and a retry of the key places a fresh attempt that takes stock once.
    order = await shop.orders.CreateOrder(create("k-slow", ("SAGA-D", 3)), timeout=30)
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED
    assert order.order_id == record.order_id
    assert (await shop.record("k-slow")).attempt == 2
    assert await shop.stock("SAGA-D") == 7


async def test_unreachable_inventory_leaves_the_roll_back_to_the_reconciler(
    start_shop: Any,
) -> None:
    shop = await start_shop(inventory_up=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(create("k-dark", ("ESP-001", 4)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # The attempt was claimed for roll-back (it can never be confirmed now), but Release
    # could not be sent either, so it stays ROLLING_BACK for the reconciler to finish.
    record = await shop.record("k-dark")
    assert (record.status, record.attempt) == (ROLLING_BACK, 1)

    await shop.start_inventory()
    # Not stale yet: an attempt that may still be in flight is left alone.
    assert await Reconciler(shop.placement, 1.0, stale_after_s=3600).run_once() == 0
    reconciler = Reconciler(shop.placement, 1.0, stale_after_s=0)

    async def failed() -> bool:
        await reconciler.run_once()  # the channel may still be reconnecting
        record: OrderRecord = await shop.record("k-dark")
        return record.status == FAILED

    await wait_until_async(failed, "the reconciler to release the pending attempt")
    assert await shop.stock("ESP-001") == 100
    # Release left a tombstone: a late Reserve of that attempt can never apply.
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await shop.inventory.Reserve(
            inventory_pb2.ReserveRequest(
                reservation_id=record.reservation_id, items=items(("ESP-001", 4))
            ),
            timeout=10,
        )
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await shop.stock("ESP-001") == 100

    order = await shop.orders.CreateOrder(create("k-dark", ("ESP-001", 4)), timeout=30)
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED
    assert (await shop.record("k-dark")).attempt == 2
    assert await shop.stock("ESP-001") == 96


async def test_reconciler_returns_stock_of_a_placement_that_died_mid_way(shop: Any) -> None:
    # As if a replica reserved stock and crashed before recording the outcome.
    record = await shop.store.create_or_get("k-crash", "cust-1", [Item("MUG-003", 5)])
    await shop.inventory.Reserve(
        inventory_pb2.ReserveRequest(
            reservation_id=record.reservation_id, items=items(("MUG-003", 5))
        ),
        timeout=10,
    )
    assert await shop.stock("MUG-003") == 95
    assert await Reconciler(shop.placement, 1.0, stale_after_s=0).run_once() == 1
    assert (await shop.record("k-crash")).status == FAILED
    assert await shop.stock("MUG-003") == 100
    assert await Reconciler(shop.placement, 1.0, stale_after_s=0).run_once() == 0


async def test_reconciler_finishes_a_cancel_that_died_mid_way(shop: Any) -> None:
    order = await shop.orders.CreateOrder(create("k-halfcancel", ("KTL-005", 2)), timeout=30)
    assert await shop.stock("KTL-005") == 98
    record = await shop.record("k-halfcancel")
    assert await shop.store.transition(record, CANCELLING, (CONFIRMED,)) is not None
    assert await Reconciler(shop.placement, 1.0, stale_after_s=0).run_once() == 1
    assert (await shop.record("k-halfcancel")).status == CANCELLED
    assert await shop.stock("KTL-005") == 100
    fetched = await shop.orders.GetOrder(
        orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id), timeout=30
    )
    assert fetched.status == common_pb2.ORDER_STATUS_CANCELLED


async def test_retry_of_an_attempt_released_underneath_places_a_new_one(shop: Any) -> None:
    await shop.set_stock("SAGA-U", 10)
    # Attempt 1's reservation was released while the order is still PENDING (nothing
    # of ours does that without claiming the attempt first, but a replica of an older
    # version would) when the client's retry of the key arrives.
    record = await shop.store.create_or_get("k-underneath", "cust-1", [Item("SAGA-U", 2)])
    released = await shop.inventory.Release(
        inventory_pb2.ReleaseRequest(reservation_id=record.reservation_id), timeout=10
    )
    assert released.released is False  # nothing was held: a tombstone now
    # Inventory refusing a released reservation says nothing about the order itself:
    # the retry must not be recorded (and replayed forever) as a rejection.
    order = await shop.orders.CreateOrder(create("k-underneath", ("SAGA-U", 2)), timeout=30)
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED
    assert (await shop.record("k-underneath")).attempt == 2
    assert await shop.stock("SAGA-U") == 8


async def test_confirmation_that_loses_to_a_roll_back_starts_a_new_attempt(
    start_shop: Any,
) -> None:
    # A long Reserve timeout: the gate, not the deadline, decides when it answers.
    shop, gated = await start_gated_shop(start_shop, timeout_s=60.0)
    await shop.set_stock("SAGA-L", 10)
    record = await shop.store.create_or_get("k-lost", "cust-1", [Item("SAGA-L", 3)])
    # A retry of the key continues attempt 1; its Reserve takes the stock, then waits.
    retry = asyncio.ensure_future(
        shop.orders.CreateOrder(create("k-lost", ("SAGA-L", 3)), timeout=30)
    )
    await asyncio.wait_for(gated[0].reserved.wait(), 30)
    assert await shop.stock("SAGA-L") == 7
    # Meanwhile attempt 1 is rolled back (as the reconciler would): stock returned.
    await shop.placement.roll_back(record)
    assert (await shop.record("k-lost")).status == FAILED
    assert await shop.stock("SAGA-L") == 10
    gated[0].gate.set()
    order = await retry
    # Never "success" with an order that does not exist: the retry places attempt 2.
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED
    assert (await shop.record("k-lost")).attempt == 2
    assert await shop.stock("SAGA-L") == 7
    fetched = await shop.orders.GetOrder(
        orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id), timeout=30
    )
    assert fetched.status == common_pb2.ORDER_STATUS_CONFIRMED


async def test_a_saga_whose_caller_left_finishes_without_unhandled_errors(
    start_shop: Any,
) -> None:
    shop, gated = await start_gated_shop(start_shop, timeout_s=3.0)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await shop.orders.CreateOrder(create("k-gone", ("ESP-001", 1)), timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The caller is gone; the saga is not: its Reserve times out and is rolled back.
        await wait_until_async(lambda: _saga_done(shop, "k-gone"), "the abandoned saga to finish")
        gated[0].gate.set()
        gc.collect()
        assert not [c for c in reported if "never retrieved" in c.get("message", "")], reported
    finally:
        loop.set_exception_handler(None)
    assert await shop.stock("ESP-001") == 100


async def _saga_done(shop: Any, key: str) -> bool:
    running = any(
        getattr(task.get_coro(), "__qualname__", "") == "OrderPlacement.place"
        for task in asyncio.all_tasks()
    )
    order = await shop.store.get_by_key(key)
    return not running and order is not None and order.status == FAILED
