"""A refusal recorded by one request while another request of the same key reserves.

Two requests of one key work on the same attempt. The first finds the SKU short and
records the refusal (REJECTED) as the order's answer; stock arrives; the second,
whose Reserve the test held at inventory's door until then, takes the stock. Nobody
can confirm a REJECTED attempt, so that stock must go back at once: the reconciler
never looks at answered orders, and before the fix the units stayed reserved by an
order that does not exist (a leak, not an oversell). Forced with a gate, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from shop.inventory.servicer import InventoryServicer
from shop.inventory.store import RELEASED, RESERVATION_STATE, InventoryStore
from shop.orders.store import REJECTED
from shop.runtime.database import Database
from shop.v1 import common_pb2, orders_pb2

SKU = "REJ-1"
STEP_TIMEOUT_S = 60


class DoorInventory(InventoryServicer):
    """Holds the first Reserve before it touches stock, until the test opens the door."""

    def __init__(self, store: InventoryStore) -> None:
        super().__init__(store)
        self.arrived = asyncio.Event()
        self.open = asyncio.Event()
        self._held = False

    async def Reserve(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not self._held:
            self._held = True
            self.arrived.set()
            await self.open.wait()
        return await super().Reserve(request, context)


async def test_stock_taken_for_an_attempt_rejected_meanwhile_goes_back(start_shop: Any) -> None:
    doors: list[DoorInventory] = []

    def servicer(store: InventoryStore) -> InventoryServicer:
        doors.append(DoorInventory(store))
        return doors[-1]

    shop = await start_shop(servicer=servicer, timeout_s=60.0)
    door = doors[0]
    await shop.set_stock(SKU, 0)
    request = orders_pb2.CreateOrderRequest(
        idempotency_key="k-rejected-race",
        customer_id="cust-1",
        items=[common_pb2.OrderItem(sku=SKU, quantity=2)],
    )
    second = asyncio.ensure_future(shop.orders.CreateOrder(request, timeout=120))
    await asyncio.wait_for(door.arrived.wait(), STEP_TIMEOUT_S)
    # The first request of the key (the door holds only one call) is refused...
    try:
        await shop.orders.CreateOrder(request, timeout=60)
        raise AssertionError("the SKU had no stock")
    except grpc.aio.AioRpcError as refused:
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await shop.record("k-rejected-race")).status == REJECTED
    # ...then stock arrives and the held Reserve goes through and takes it.
    await shop.set_stock(SKU, 2)
    door.open.set()
    try:
        await asyncio.wait_for(second, STEP_TIMEOUT_S)
        raise AssertionError("a REJECTED order must answer with its refusal")
    except grpc.aio.AioRpcError as replayed:
        assert replayed.code() == grpc.StatusCode.FAILED_PRECONDITION
    record = await shop.record("k-rejected-race")
    assert record.status == REJECTED
    assert await shop.stock(SKU) == 2, "the units reserved for a rejected attempt leaked"
    db = Database(shop.database_url)
    try:
        async with db.read() as tx:
            row = await tx.fetchrow(RESERVATION_STATE, record.reservation_id)
        assert row is not None
        state = row[0]
    finally:
        await db.dispose()
    assert state == RELEASED
