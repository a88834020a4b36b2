"""The Orders gRPC service: placing, reading, cancelling and watching orders.

Placing an order spans two databases (orders and inventory), so it is a small saga
with the reservation id as the link: PENDING row -> Reserve -> CONFIRMED. Whatever
fails, stock is either reserved for a CONFIRMED order or returned: an unknown
outcome is resolved by releasing the reservation (Release leaves a tombstone, so a
late Reserve cannot apply afterwards), and the reconciler finishes what a crash
left half-done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from shop.orderlines import validate_items
from shop.orders.store import (
    CANCELLED,
    CANCELLING,
    CONFIRMED,
    FAILED,
    PENDING,
    REJECTED,
    VISIBLE_STATES,
    Item,
    OrderRecord,
    OrderStore,
    request_hash,
)
from shop.runtime.callscope import detached_scope
from shop.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    ReplayedStatus,
    ShopError,
    status_details_of,
)
from shop.runtime.validation import Violations, decode_page_token, encode_page_token, page_size
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc, orders_pb2, orders_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# Sagas that must finish even if their caller goes away: strong references (asyncio
# keeps only weak ones to tasks).
_unfinished: set[asyncio.Task[Any]] = set()


async def _run_to_completion(work: Coroutine[Any, Any, T]) -> T:
    """Awaits ``work`` in a task that a cancelled caller (deadline, hang-up) cannot stop."""
    task = asyncio.ensure_future(work)
    _unfinished.add(task)
    task.add_done_callback(_finished)
    return await asyncio.shield(task)


def _finished(task: asyncio.Task[Any]) -> None:
    _unfinished.discard(task)
    # Read the outcome so that one nobody waits for any more (the caller left) is not
    # logged as "Task exception was never retrieved"; a caller still there gets it too.
    error = None if task.cancelled() else task.exception()
    if error is not None and not isinstance(error, grpc.aio.AioRpcError | ShopError):
        log.error("order operation failed", exc_info=error)


# Inventory answered and took nothing: safe to record as the order's final outcome.
DEFINITE_REFUSALS = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)
_STATUS = {
    PENDING: common_pb2.ORDER_STATUS_PENDING,
    CONFIRMED: common_pb2.ORDER_STATUS_CONFIRMED,
    CANCELLING: common_pb2.ORDER_STATUS_CANCELLING,
    CANCELLED: common_pb2.ORDER_STATUS_CANCELLED,
}


def to_message(order: OrderRecord) -> common_pb2.Order:
    return common_pb2.Order(
        order_id=order.order_id,
        customer_id=order.customer_id,
        items=[common_pb2.OrderItem(sku=i.sku, quantity=i.quantity) for i in order.items],
        total_cents=order.total_cents,
        status=_STATUS.get(order.status, common_pb2.ORDER_STATUS_UNSPECIFIED),
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def _attempt_released(error: grpc.aio.AioRpcError, reservation_id: str) -> bool:
    """True if inventory refused ``reservation_id`` because it was already released
    (the ``RESERVATION`` violation of ``InventoryStore.reserve``)."""
    raw = status_details_of(error)
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION or raw is None:
        return False
    for detail in status_pb2.Status.FromString(raw).details:
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(failure) and any(
            v.type == "RESERVATION" and v.subject == reservation_id for v in failure.violations
        ):
            return True
    return False


class OrderPlacement:
    """The saga behind CreateOrder, and the clean-up the reconciler shares with it."""

    def __init__(
        self, store: OrderStore, inventory: inventory_pb2_grpc.InventoryStub, timeout_s: float
    ) -> None:
        self.store = store
        self._inventory = inventory
        self._timeout_s = timeout_s

    async def place(self, order: OrderRecord) -> OrderRecord:
        if order.status == FAILED:
            # The previous attempt was rolled back; a retry of the key starts a new one.
            restarted = await self.store.transition(
                order, PENDING, (FAILED,), attempt=order.attempt + 1
            )
            order = restarted or await self._reload(order)
            if order.status != PENDING:
                return await self.place(order)
        if order.status in (CONFIRMED, CANCELLING, CANCELLED):
            return order
        if order.status == REJECTED:
            raise ReplayedStatus(
                grpc.StatusCode[order.failure_code or "FAILED_PRECONDITION"],
                order.failure_message or "order was rejected",
                order.failure_details,
            )
        request = inventory_pb2.ReserveRequest(
            reservation_id=order.reservation_id,
            items=[common_pb2.OrderItem(sku=i.sku, quantity=i.quantity) for i in order.items],
        )
        try:
            reserved = await self._inventory.Reserve(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            if _attempt_released(error, order.reservation_id):
                # A concurrent roll-back released this attempt: it is over (and holds
                # no stock), so it is no answer for the order. Continue with the next.
                await self.store.transition(order, FAILED, (PENDING,))
                return await self.place(await self._reload(order))
            if error.code() in DEFINITE_REFUSALS:
                await self.store.transition(
                    order,
                    REJECTED,
                    (PENDING,),
                    failure_code=error.code().name,
                    failure_message=error.details() or "",
                    failure_details=status_details_of(error),
                )
            else:
                await self.roll_back(order)
            raise
        confirmed = await self.store.transition(
            order, CONFIRMED, (PENDING,), total_cents=reserved.total_cents
        )
        if confirmed is None:
            # Another request confirmed this attempt, or a roll-back released it (its
            # stock is back): answer from the order's current state, never the stale one.
            return await self.place(await self._reload(order))
        return confirmed

    async def roll_back(self, order: OrderRecord) -> None:
        """Releases an attempt whose outcome is unknown and marks it FAILED.

        If inventory cannot be reached either, the order stays PENDING and the
        reconciler retries later."""
        try:
            with detached_scope():
                await self._inventory.Release(
                    inventory_pb2.ReleaseRequest(reservation_id=order.reservation_id),
                    timeout=self._timeout_s,
                )
        except grpc.aio.AioRpcError as error:
            log.warning(
                "release failed; reconciler will retry",
                extra={"order_id": order.order_id, "code": error.code().name},
            )
            return
        await self.store.transition(order, FAILED, (PENDING,))

    async def finish_cancel(self, order: OrderRecord) -> OrderRecord:
        with detached_scope():
            await self._inventory.Release(
                inventory_pb2.ReleaseRequest(reservation_id=order.reservation_id),
                timeout=self._timeout_s,
            )
        cancelled = await self.store.transition(order, CANCELLED, (CANCELLING,))
        return cancelled or await self._reload(order)

    async def _reload(self, order: OrderRecord) -> OrderRecord:
        current = await self.store.get(order.order_id)
        assert current is not None, "orders are never deleted"
        return current


class OrdersServicer(orders_pb2_grpc.OrdersServicer):
    def __init__(self, placement: OrderPlacement, watch_interval_s: float = 0.5) -> None:
        self._placement = placement
        self._store = placement.store
        self._watch_interval_s = watch_interval_s

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        violations = Violations()
        violations.identifier("idempotency_key", request.idempotency_key, max_len=128)
        violations.identifier("customer_id", request.customer_id, max_len=64)
        validate_items(violations, request.items)
        violations.raise_if_any()
        items = [Item(i.sku, i.quantity) for i in request.items]
        order = await self._store.create_or_get(request.idempotency_key, request.customer_id, items)
        if order.request_hash != request_hash(request.customer_id, items):
            raise InvalidArgument.single(
                "idempotency_key", "was already used for a different order"
            )
        # Shielded: a caller that gives up mid-way must not stop the saga between
        # reserving stock and recording it.
        placed = await _run_to_completion(self._placement.place(order))
        return to_message(placed)

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        return to_message(await self._visible(request.order_id))

    async def _visible(self, order_id: str) -> OrderRecord:
        violations = Violations()
        violations.uuid("order_id", order_id)
        violations.raise_if_any()
        order = await self._store.get(order_id)
        if order is None or order.status not in VISIBLE_STATES:
            raise NotFound("order", order_id)
        return order

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        violations = Violations()
        violations.identifier("customer_id", request.customer_id, max_len=64)
        violations.raise_if_any()
        limit = page_size(request.page_size, default=20, maximum=100)
        position = decode_page_token(request.page_token, ("c", "o"))
        after = (position["c"], position["o"]) if position else None
        records = await self._store.list_for_customer(request.customer_id, after, limit + 1)
        next_token = ""
        if len(records) > limit:
            last = records[limit - 1]
            next_token = encode_page_token({"c": last.created_at, "o": last.order_id})
        return orders_pb2.ListOrdersResponse(
            orders=[to_message(r) for r in records[:limit]], next_page_token=next_token
        )

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        order = await self._visible(request.order_id)
        if order.status == PENDING:
            raise FailedPrecondition(
                [PreconditionViolation("ORDER_STATE", order.order_id, "is still being placed")]
            )
        if order.status == CONFIRMED:
            order = await self._store.transition(order, CANCELLING, (CONFIRMED,)) or (
                await self._visible(request.order_id)
            )
        if order.status == CANCELLING:
            order = await _run_to_completion(self._placement.finish_cancel(order))
        return to_message(order)

    async def WatchOrder(
        self, request: orders_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orders_pb2.OrderEvent]:
        order = await self._visible(request.order_id)
        # Replicas share the database, not memory: polling sees changes made anywhere.
        last_seen = None
        while True:
            stamp = (order.status, order.updated_at)
            if stamp != last_seen:
                last_seen = stamp
                yield orders_pb2.OrderEvent(order=to_message(order))
            if order.status == CANCELLED:
                return
            await asyncio.sleep(self._watch_interval_s)
            order = await self._visible(request.order_id)
