"""The saga behind CreateOrder: PENDING row -> Reserve -> CONFIRMED.

Placing an order spans two databases (orders and inventory), so it is a small saga
with the reservation id as the link. Whatever fails, stock is either reserved for a
CONFIRMED order or returned: an unknown outcome is resolved by releasing the
reservation (Release leaves a tombstone, so a late Reserve cannot apply afterwards),
and the reconciler finishes what a crash left half-done.

Confirming an attempt and releasing it exclude each other. Any number of actors may
work on one attempt N at once (the first request, retries of its key on any
replica, every replica's reconciler), and each acts on a record it read earlier, so
no decision may rest on that record alone. Instead:

* CONFIRMED is reached only by a compare-and-set from PENDING(N);
* nobody sends Release for attempt N's reservation before a compare-and-set from
  PENDING(N) to ROLLING_BACK(N) has succeeded (by them or by someone else);
* ROLLING_BACK(N) only ever moves on to FAILED(N), and FAILED(N) only to
  PENDING(N + 1) with a new reservation id.

Both compare-and-sets leave PENDING(N), so at most one of them succeeds: an attempt
is either confirmed and its reservation is never released by the saga, or claimed
for roll-back and never confirmed. Whoever loses a compare-and-set re-reads the
order and continues from its current state. Finishing someone else's ROLLING_BACK
is always allowed (Release is idempotent, and FAILED(N) needs ROLLING_BACK(N)), so
a roll-back whose actor crashed or lost inventory midway is finished by the next
retry of the key or by the reconciler. Cancellation claims the same way
(CONFIRMED -> CANCELLING before Release).
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
    ROLLING_BACK,
    OrderRecord,
    OrderStore,
)
from shop.runtime.callscope import detached_scope
from shop.runtime.database import connection_problem
from shop.runtime.errors import ReplayedStatus, ShopError, status_details_of
from shop.runtime.failures import RateLimitedLog
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc

log = logging.getLogger(__name__)
# An outage fails every call the same way: log the first in full, then count.
limited_log = RateLimitedLog(log)

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
    if error is None or isinstance(error, grpc.aio.AioRpcError | ShopError):
        return
    if connection_problem(error):
        # The database is down: the caller got UNAVAILABLE; no stack to read.
        limited_log.log("database unavailable", logging.WARNING, "orders database unavailable")
    else:
        limited_log.log(
            ("failed", type(error).__name__), logging.ERROR, "order operation failed",
            exc_info=error,
        )  # fmt: skip


# States in which the order itself is the answer to a request for its key.
ANSWERED = (CONFIRMED, CANCELLING, CANCELLED)

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
        """Drives ``order`` (any state) to an answer: the order, or an error."""
        while True:
            if order.status == ROLLING_BACK:
                # This attempt was claimed for roll-back, so it can never be confirmed.
                # Finish the release (the claimer may have died or lost inventory) and
                # go on like a retry of a FAILED order.
                order = await self._finish_roll_back(order)
                continue
            if order.status == FAILED:
                # The previous attempt was rolled back; a retry of the key starts a new one.
                order = await self.store.next_attempt(order) or await self._reload(order)
                continue
            if order.status in ANSWERED:
                return order
            if order.status == REJECTED:
                raise ReplayedStatus(
                    grpc.StatusCode[order.failure_code or "FAILED_PRECONDITION"],
                    order.failure_message or "order was rejected",
                    order.failure_details,
                )
            # PENDING: confirmed, or a compare-and-set was lost and the loop continues
            # from the order's current state.
            order = await self._reserve_and_confirm(order)

    async def _reserve_and_confirm(self, order: OrderRecord) -> OrderRecord:
        """One try at the PENDING attempt ``order``: the confirmed order, or the order's
        state after a lost compare-and-set (for ``place`` to continue from)."""
        request = inventory_pb2.ReserveRequest(
            reservation_id=order.reservation_id,
            items=[common_pb2.OrderItem(sku=i.sku, quantity=i.quantity) for i in order.items],
        )
        try:
            reserved = await self._inventory.Reserve(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            if _attempt_released(error, order.reservation_id):
                # Released means claimed: the attempt is ROLLING_BACK or past it, and it
                # holds no stock. (Should anything have released it without a claim,
                # roll_back claims it now, so no one can confirm it afterwards.)
                return await self.roll_back(order)
            if error.code() in DEFINITE_REFUSALS:
                rejected = await self.store.transition(
                    order,
                    REJECTED,
                    (PENDING,),
                    failure_code=error.code().name,
                    failure_message=error.details() or "",
                    failure_details=status_details_of(error),
                )
                if rejected is None:
                    # Another request of the key confirmed this attempt, or it was
                    # claimed for roll-back: the refusal is not the order's answer.
                    return await self._reload(order)
                raise
            # Unknown outcome: the stock may be taken. Release it, unless a concurrent
            # request of the key confirmed the attempt first (then that is the answer).
            try:
                settled = await self.roll_back(order)
            except grpc.aio.AioRpcError as release_error:
                limited_log.log(
                    ("release failed", release_error.code()),
                    logging.WARNING,
                    "release failed; a retry or the reconciler will finish it",
                    extra={"order_id": order.order_id, "code": release_error.code().name},
                )
                raise error from None
            if settled.status in ANSWERED:
                return settled
            raise
        confirmed = await self.store.transition(
            order, CONFIRMED, (PENDING,), total_cents=reserved.total_cents
        )
        if confirmed is not None:
            return confirmed
        # Another request confirmed this attempt, or a roll-back claimed it (its stock
        # is being returned): never answer from the stale record.
        current = await self._reload(order)
        if (current.status, current.attempt) == (REJECTED, order.attempt):
            # A concurrent request of the key was refused (short of stock) and recorded
            # that as the answer, then stock arrived and this Reserve took it: nobody
            # can confirm a REJECTED attempt, so give the stock back now (nothing else
            # ever would: the reconciler leaves answered orders alone).
            await self._release_quietly(current)
        return current

    async def _release_quietly(self, order: OrderRecord) -> None:
        try:
            await self._release(order)
        except grpc.aio.AioRpcError as error:
            limited_log.log(
                ("release failed", error.code()),
                logging.WARNING,
                "could not release the reservation of a rejected attempt",
                extra={"order_id": order.order_id, "code": error.code().name},
            )

    async def roll_back(self, order: OrderRecord) -> OrderRecord:
        """Ends the attempt of ``order`` unless it has been confirmed; returns the order
        as it is afterwards (FAILED if the attempt was rolled back).

        ``order`` may be long out of date (a reconciler's batch): the claim is a
        compare-and-set on PENDING at the same attempt, so an attempt confirmed since
        is left alone and nothing is released. Raises AioRpcError if Release cannot
        be done; the order then stays ROLLING_BACK, for a retry of its key or the
        reconciler to finish."""
        if order.status == PENDING:
            claimed = await self.store.transition(order, ROLLING_BACK, (PENDING,))
            order = claimed or await self._reload(order)
        if order.status != ROLLING_BACK:
            return order
        return await self._finish_roll_back(order)

    async def _finish_roll_back(self, order: OrderRecord) -> OrderRecord:
        """Releases the reservation of a ROLLING_BACK attempt, then marks it FAILED.

        Anyone may do this, and several may at once: the attempt was claimed, so
        nobody can confirm it; Release is idempotent; only one FAILED transition
        succeeds, and only while the order is still ROLLING_BACK at this attempt."""
        assert order.status == ROLLING_BACK, order.status
        await self._release(order)
        failed = await self.store.transition(order, FAILED, (ROLLING_BACK,))
        return failed or await self._reload(order)

    async def finish_cancel(self, order: OrderRecord) -> OrderRecord:
        await self._release(order)
        cancelled = await self.store.transition(order, CANCELLED, (CANCELLING,))
        return cancelled or await self._reload(order)

    async def _release(self, order: OrderRecord) -> None:
        """Returns the stock of ``order``'s current reservation (idempotent). Detached
        from the incoming call's deadline: clean-up must happen after it has passed."""
        with detached_scope():
            await self._inventory.Release(
                inventory_pb2.ReleaseRequest(reservation_id=order.reservation_id),
                timeout=self._timeout_s,
            )

    async def _reload(self, order: OrderRecord) -> OrderRecord:
        current = await self.store.get(order.order_id)
        assert current is not None, "orders are never deleted"
        return current
