"""The saga behind CreateOrder: PENDING row -> Reserve -> CONFIRMED.

Placing an order spans two databases (orders and inventory), so it is a small saga
with the reservation id as the link. Whatever fails, stock is either reserved for a
CONFIRMED order or returned: an unknown outcome is resolved by releasing the
reservation (Release leaves a tombstone, so a late Reserve cannot apply afterwards),
and the reconciler finishes what a crash left half-done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from shop.orders.store import (
    CANCELLED,
    CANCELLING,
    CONFIRMED,
    FAILED,
    PENDING,
    REJECTED,
    OrderRecord,
    OrderStore,
)
from shop.runtime.callscope import detached_scope
from shop.runtime.errors import ReplayedStatus, ShopError, status_details_of
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# Sagas that must finish even if their caller goes away: strong references (asyncio
# keeps only weak ones to tasks).
_unfinished: set[asyncio.Task[Any]] = set()


async def run_to_completion(work: Coroutine[Any, Any, T]) -> T:
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
