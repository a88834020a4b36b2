"""Reservation ids: random per attempt, stored with the order, never derived from
anything a client sees. Release takes nothing but the id, so an id built from the
order id would let anyone who knows an order return its stock.
"""

from __future__ import annotations

from typing import Any

from shop.orders.store import (
    CONFIRMED,
    FAILED,
    PENDING,
    ROLLING_BACK,
    Item,
    OrderRecord,
    OrderStore,
)
from shop.runtime.database import Database
from shop.runtime.validation import is_identifier
from shop.v1 import common_pb2, inventory_pb2, orders_pb2


def assert_private(record: OrderRecord) -> None:
    rid = record.reservation_id
    # Within what inventory accepts (identifier, at most 160 characters)...
    assert is_identifier(rid) and len(rid) <= 160, rid
    # ...and nothing of the order's public identity in it.
    assert record.order_id not in rid and record.order_id.replace("-", "") not in rid
    assert record.idempotency_key not in rid
    assert len(rid) >= 32, "too short to be unguessable"


async def test_each_attempt_gets_its_own_random_reservation_id(database_url: str) -> None:
    db = Database(database_url)
    try:
        store = OrderStore(db)
        await store.initialize()
        first = await store.create_or_get("k-rid-1", "cust-1", [Item("ESP-001", 1)])
        other = await store.create_or_get("k-rid-2", "cust-1", [Item("ESP-001", 1)])
        assert_private(first)
        assert_private(other)
        assert first.reservation_id != other.reservation_id
        # Stored with the order: every read, and a repeat of the key, sees the same id.
        assert (await store.get(first.order_id)) == first
        assert (await store.create_or_get("k-rid-1", "cust-1", [Item("ESP-001", 1)])) == first

        # Attempt 1 is rolled back; the next attempt gets a new id in the same step.
        rolling = await store.transition(first, ROLLING_BACK, (PENDING,))
        assert rolling is not None
        failed = await store.transition(rolling, FAILED, (ROLLING_BACK,))
        assert failed is not None and failed.reservation_id == first.reservation_id
        second = await store.next_attempt(failed)
        assert second is not None
        assert (second.status, second.attempt) == (PENDING, 2)
        assert_private(second)
        assert second.reservation_id not in (first.reservation_id, other.reservation_id)
        assert (await store.get(first.order_id)) == second
        # A second "next attempt" from the same FAILED record loses the compare-and-set
        # and leaves attempt 2 (and its id) alone.
        assert await store.next_attempt(failed) is None
        assert (await store.get(first.order_id)) == second
    finally:
        await db.dispose()


async def test_a_release_by_a_derivable_id_cannot_touch_an_order(shop: Any) -> None:
    await shop.set_stock("RID-1", 10)
    order = await shop.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            idempotency_key="k-rid-guess",
            customer_id="cust-1",
            items=[common_pb2.OrderItem(sku="RID-1", quantity=4)],
        ),
        timeout=30,
    )
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED
    assert await shop.stock("RID-1") == 6
    record = await shop.record("k-rid-guess")
    assert record.status == CONFIRMED
    assert_private(record)
    # What the id used to be (order id and attempt): now it names no reservation.
    for guess in (f"{order.order_id}:1", f"{order.order_id}:{record.attempt}", order.order_id):
        released = await shop.inventory.Release(
            inventory_pb2.ReleaseRequest(reservation_id=guess), timeout=10
        )
        assert released.released is False
    assert await shop.stock("RID-1") == 6


async def test_a_retried_order_reserves_under_a_new_id(shop: Any) -> None:
    await shop.set_stock("RID-2", 10)
    # Attempt 1's outcome was unknown and it was rolled back (as the reconciler does).
    record = await shop.store.create_or_get("k-rid-retry", "cust-1", [Item("RID-2", 3)])
    rolled_back = await shop.placement.roll_back(record)
    assert (rolled_back.status, rolled_back.attempt) == (FAILED, 1)
    # The retry of the key places attempt 2 under a fresh id, not attempt 1's spent one.
    placed = await shop.placement.place(rolled_back)
    assert (placed.status, placed.attempt) == (CONFIRMED, 2)
    assert_private(placed)
    assert placed.reservation_id != record.reservation_id
    assert (await shop.record("k-rid-retry")).reservation_id == placed.reservation_id
    assert await shop.stock("RID-2") == 7
    # Attempt 1's id is spent (released); attempt 2's holds the stock.
    again = await shop.inventory.Release(
        inventory_pb2.ReleaseRequest(reservation_id=record.reservation_id), timeout=10
    )
    assert again.released is False
    assert await shop.stock("RID-2") == 7
