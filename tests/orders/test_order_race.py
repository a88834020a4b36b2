"""Races between the CreateOrder saga, retries of its key and the reconciler, on
SQLite and PostgreSQL over real gRPC.

Each test forces one interleaving with gates the test opens itself (a reconciler
whose ``stale()`` stops after reading its batch, an inventory whose Reserve or
Release waits at a gate), never with timing. Afterwards the stock must add up:

* units of CONFIRMED orders + stock == the initial stock of the SKU;
* no CONFIRMED order's reservation is RELEASED in inventory's tables;
* the stock is exactly what was ordered, so a further order is refused
  (FAILED_PRECONDITION), not oversold.

Only the Orders and Inventory RPCs that place orders are used; order state is read
through the OrderStore.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.credentials import LocalCredentials
from shop.inventory.servicer import InventoryServicer
from shop.inventory.store import RESERVED, InventoryStore
from shop.orders.placement import OrderPlacement
from shop.orders.reconciler import Reconciler
from shop.orders.store import CONFIRMED, Item, OrderRecord, OrderStore
from shop.runtime.database import Database, sql
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc, orders_pb2

from ..support.auth import caller_metadata, channel_with, user_metadata
from ..support.catalog import stock_of

SKU = "RACE-1"
CUSTOMER = "cust-race"
KEYS = [f"race-{n}" for n in range(12)]
QUANTITY = {key: 1 + n % 3 for n, key in enumerate(KEYS)}
# The SKU holds exactly what the orders ask for: one unit more confirmed is an oversell.
INITIAL_STOCK = sum(QUANTITY.values())
# Upper bound for a step that the gates have already made possible (not a pacing delay).
STEP_TIMEOUT_S = 60

RESERVATION_STATES = sql(
    "SELECT reservation_id, state FROM reservations WHERE reservation_id = ANY($1)"
)


class Gate:
    """Once armed, holds the next call that reaches it until the test opens it."""

    def __init__(self) -> None:
        self._armed = False
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()
        self.held: list[str] = []

    def arm(self) -> None:
        self._armed = True

    async def hold(self, reservation_id: str) -> bool:
        """True if this call was the one held."""
        if not self._armed:
            return False
        self._armed = False
        self.held.append(reservation_id)
        self.arrived.set()
        await self.opened.wait()
        return True


class RacingInventory(InventoryServicer):
    """Inventory with a gate on Reserve and one on Release.

    A held Reserve has taken its stock; when let go it answers INTERNAL, so its
    caller cannot tell whether the stock was taken (an unknown outcome). A held
    Release has not returned any stock yet."""

    def __init__(self, store: InventoryStore) -> None:
        super().__init__(store)
        self.reserve_gate = Gate()
        self.release_gate = Gate()

    async def Reserve(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response = await super().Reserve(request, context)
        if await self.reserve_gate.hold(request.reservation_id):
            await context.abort(grpc.StatusCode.INTERNAL, "the answer was lost after reserving")
        return response

    async def Release(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.release_gate.hold(request.reservation_id)
        return await super().Release(request, context)


class PausingStore(OrderStore):
    """Once armed, ``stale()`` reads its next non-empty batch, then waits for the test
    before handing it to the reconciler: the batch is read, nothing is done yet."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._armed = False
        self.batch: list[OrderRecord] = []
        self.batch_read = asyncio.Event()
        self.resume = asyncio.Event()

    def pause_next_batch(self) -> None:
        self._armed = True

    async def stale(self, statuses: tuple[str, ...], older_than_s: float) -> list[OrderRecord]:
        found = await super().stale(statuses, older_than_s)
        if found and self._armed:
            self._armed = False
            self.batch = found
            self.batch_read.set()
            await self.resume.wait()
        return found


@dataclass
class Race:
    shop: Any
    keys: list[str]
    initial_stock: int
    inventory: RacingInventory
    # A second orders replica's reconciler: its own store and inventory channel.
    reconciler_store: PausingStore
    reconciler: Reconciler
    inventory_stub: inventory_pb2_grpc.InventoryStub
    db: Database

    async def stock(self) -> int:
        reply = await self.inventory_stub.ListProducts(
            inventory_pb2.ListProductsRequest(page_size=200), timeout=10
        )
        return stock_of(reply, SKU)

    async def reservation_states(self, reservation_ids: list[str]) -> dict[str, str]:
        async with self.db.read() as tx:
            rows = await tx.fetch(RESERVATION_STATES, reservation_ids)
        return {reservation_id: state for reservation_id, state in rows}


OpenRace = Callable[..., Awaitable[Race]]


def create(key: str, quantity: int) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        idempotency_key=key,
        customer_id=CUSTOMER,
        items=[common_pb2.OrderItem(sku=SKU, quantity=quantity)],
    )


async def place(shop: Any, key: str) -> common_pb2.Order:
    order: common_pb2.Order = await shop.orders.CreateOrder(create(key, QUANTITY[key]), timeout=30)
    return order


async def outcome(call: Awaitable[common_pb2.Order]) -> common_pb2.Order | grpc.StatusCode:
    """The order a CreateOrder answered, or its error code."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return error.code()


async def step(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, STEP_TIMEOUT_S)


@pytest.fixture
async def open_race(start_shop: Any, credentials: LocalCredentials) -> AsyncIterator[OpenRace]:
    """``await open_race(left, keys=KEYS)``: an orders server with a RacingInventory
    and the SKU stocked with exactly the units ``keys`` order, whose orders are

    * ``inventory_down``: placed while inventory was unreachable (the placement
      could neither reserve nor release);
    * ``placer_crashed``: PENDING with their stock reserved, as left by a replica
      that died between Reserve and recording the outcome;
    * ``not_placed``: not placed yet.
    """
    async with AsyncExitStack() as stack:

        async def open_(left: str, keys: list[str] = KEYS) -> Race:
            assert left in ("inventory_down", "placer_crashed", "not_placed"), left
            servicers: list[RacingInventory] = []

            def servicer(store: InventoryStore) -> InventoryServicer:
                servicers.append(RacingInventory(store))
                return servicers[-1]

            # A long Reserve timeout: the gates, not deadlines, decide what happens when.
            shop = await start_shop(inventory_up=False, timeout_s=60.0)
            if left == "inventory_down":
                down = await asyncio.gather(*(outcome(place(shop, key)) for key in keys))
                assert down == [grpc.StatusCode.UNAVAILABLE] * len(keys)
            await shop.start_inventory(servicer)
            # A channel opened now, with inventory up, connects on its first call. It
            # calls as orders does (and as an administrator, for SetStock).
            channel = await stack.enter_async_context(
                channel_with(
                    f"127.0.0.1:{shop.inventory_port}",
                    caller_metadata(credentials, "orders", INVENTORY_SERVICE),
                    user_metadata(credentials, "stock-admin", admin=True),
                )
            )
            inventory_stub = inventory_pb2_grpc.InventoryStub(channel)
            initial_stock = sum(QUANTITY[key] for key in keys)
            await inventory_stub.SetStock(
                inventory_pb2.SetStockRequest(sku=SKU, stock=initial_stock, price_cents=100),
                timeout=10,
            )
            db = Database(shop.database_url)
            stack.push_async_callback(db.dispose)
            reconciler_store = PausingStore(db)
            reconciler = Reconciler(
                OrderPlacement(reconciler_store, inventory_stub, 10.0), 1.0, stale_after_s=0
            )
            race = Race(
                shop,
                keys,
                initial_stock,
                servicers[0],
                reconciler_store,
                reconciler,
                inventory_stub,
                db,
            )
            if left == "placer_crashed":
                for key in keys:
                    record = await shop.store.create_or_get(
                        key, CUSTOMER, [Item(SKU, QUANTITY[key])]
                    )
                    await inventory_stub.Reserve(
                        inventory_pb2.ReserveRequest(
                            reservation_id=record.reservation_id,
                            items=[common_pb2.OrderItem(sku=SKU, quantity=QUANTITY[key])],
                        ),
                        timeout=10,
                    )
                assert await race.stock() == 0
            await _wait_until_orders_reach_inventory(shop)
            return race

        yield open_


async def _wait_until_orders_reach_inventory(shop: Any) -> None:
    """The orders server's channel to inventory backs off while inventory is down;
    wait until an order of another SKU goes through it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT_S
    warm_up = orders_pb2.CreateOrderRequest(
        idempotency_key="race-warm-up",
        customer_id=CUSTOMER,
        items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)],
    )
    while True:
        try:
            await shop.orders.CreateOrder(warm_up, timeout=30)
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def assert_not_oversold(race: Race) -> None:
    confirmed: list[OrderRecord] = []
    for key in race.keys:
        record = await race.shop.store.get_by_key(key)
        if record is not None and record.status == CONFIRMED:
            confirmed.append(record)
    units = sum(i.quantity for r in confirmed for i in r.items if i.sku == SKU)
    stock = await race.stock()
    states = await race.reservation_states([r.reservation_id for r in confirmed])
    released = [r.idempotency_key for r in confirmed if states.get(r.reservation_id) != RESERVED]
    # The stock is exactly what the orders took: nothing is left for another one.
    further = await outcome(race.shop.orders.CreateOrder(create("race-further", 1), timeout=30))
    found = {
        "confirmed units + stock": units + stock,
        "CONFIRMED orders whose reservation is not RESERVED": released,
        "a further order": (
            further.name
            if isinstance(further, grpc.StatusCode)
            else common_pb2.OrderStatus.Name(further.status)
        ),
    }
    expected = {
        "confirmed units + stock": race.initial_stock,
        "CONFIRMED orders whose reservation is not RESERVED": [],
        "a further order": "FAILED_PRECONDITION",
    }
    assert found == expected, (
        f"{units} units confirmed + {stock} in stock, of {race.initial_stock}; "
        f"{len(released)} of {len(confirmed)} CONFIRMED orders have released reservations"
    )


LEFT = ["inventory_down", "placer_crashed"]


@pytest.mark.parametrize("left", LEFT)
async def test_retries_confirm_while_the_reconciler_holds_a_stale_batch(
    open_race: OpenRace, left: str
) -> None:
    race = await open_race(left)
    race.reconciler_store.pause_next_batch()
    reconciling = asyncio.ensure_future(race.reconciler.run_once())
    try:
        # The reconciler has read every order as one to roll back, and stops there.
        await step(race.reconciler_store.batch_read.wait())
        assert sorted(o.idempotency_key for o in race.reconciler_store.batch) == sorted(KEYS)
        # Inventory is back: the clients retry their keys, and every order is placed.
        answers = await asyncio.gather(*(place(race.shop, key) for key in KEYS))
        assert {a.status for a in answers} == {common_pb2.ORDER_STATUS_CONFIRMED}
    finally:
        # Now the reconciler works through its stale batch.
        race.reconciler_store.resume.set()
        fixed = await step(reconciling)
    await assert_not_oversold(race)
    assert fixed == 0, "the reconciler rolled back orders confirmed after it read them"


@pytest.mark.parametrize("left", LEFT)
async def test_retries_run_while_the_reconcilers_release_is_held(
    open_race: OpenRace, left: str
) -> None:
    race = await open_race(left)
    gate = race.inventory.release_gate
    gate.arm()
    reconciling = asyncio.ensure_future(race.reconciler.run_once())
    try:
        # The reconciler's first Release has reached inventory and waits there.
        await step(gate.arrived.wait())
        answers = await asyncio.gather(*(place(race.shop, key) for key in KEYS))
        assert {a.status for a in answers} == {common_pb2.ORDER_STATUS_CONFIRMED}
    finally:
        gate.opened.set()
        await step(reconciling)
    await assert_not_oversold(race)


@pytest.mark.parametrize("first_to_act", ["retry_confirms", "first_request_claims"])
async def test_a_roll_back_after_an_unknown_outcome_races_a_retry_of_the_key(
    open_race: OpenRace, first_to_act: str
) -> None:
    key = KEYS[2]  # three units
    race = await open_race("not_placed", keys=[key])
    reserve, release = race.inventory.reserve_gate, race.inventory.release_gate
    reserve.arm()
    if first_to_act == "first_request_claims":
        # The first request's Reserve takes the stock and answers INTERNAL at once; the
        # request starts its roll-back, and its Release waits at inventory.
        reserve.opened.set()
        release.arm()
    first = asyncio.ensure_future(outcome(place(race.shop, key)))
    try:
        if first_to_act == "retry_confirms":
            # The first request's Reserve took the stock; its answer is held.
            await step(reserve.arrived.wait())
        else:
            await step(release.arrived.wait())
        # A retry of the key (Reserve is idempotent per reservation id) is placed.
        retried = await place(race.shop, key)
        assert retried.status == common_pb2.ORDER_STATUS_CONFIRMED
    finally:
        # The first request learns nothing about its Reserve (INTERNAL) and rolls back;
        # or its held Release goes through.
        reserve.opened.set()
        release.opened.set()
        answered = await step(first)
    await assert_not_oversold(race)
    # The first request answers from the order as it is now: placed.
    assert getattr(answered, "status", answered) == common_pb2.ORDER_STATUS_CONFIRMED
    assert answered.order_id == retried.order_id
