"""Finishes orders that a crash or an unreachable inventory left half-done.

Every replica runs it; the work is idempotent (Release by reservation id, state
transitions conditional on the current state), so replicas never conflict.

A batch is read once and handled order by order, so by the time an order's turn
comes a retry of its key may have confirmed it. That is why nothing here releases
stock on the strength of the batch: ``OrderPlacement.roll_back`` first claims the
attempt (PENDING -> ROLLING_BACK at the attempt number read), and an attempt
confirmed in between fails that claim and is left alone (see shop.orders.placement).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from shop.orders.placement import OrderPlacement
from shop.orders.store import CANCELLING, FAILED, PENDING, ROLLING_BACK
from shop.runtime.database import connection_problem
from shop.runtime.failures import RateLimitedLog

log = logging.getLogger(__name__)
limited_log = RateLimitedLog(log)


class Reconciler:
    def __init__(self, placement: OrderPlacement, interval_s: float, stale_after_s: float) -> None:
        self._placement = placement
        self._interval_s = interval_s
        # Longer than any Reserve can take (its timeout is capped), so an order still
        # being placed is never touched.
        self._stale_after_s = stale_after_s

    async def run_once(self) -> int:
        """One round; returns how many of the orders it picked up ended rolled back
        (FAILED at the attempt it read) or cancelled."""
        fixed = 0
        store = self._placement.store
        # ROLLING_BACK too: a roll-back whose actor crashed (or lost inventory) between
        # its claim and FAILED. Finishing it again is harmless: Release is idempotent.
        for order in await store.stale((PENDING, ROLLING_BACK), self._stale_after_s):
            try:
                settled = await self._placement.roll_back(order)
            except grpc.aio.AioRpcError as error:
                limited_log.log(
                    ("roll-back pending", error.code()),
                    logging.WARNING,
                    "roll-back still pending",
                    extra={"order_id": order.order_id, "code": error.code().name},
                )
                continue
            # Anything else: confirmed, or moved on, since the batch was read.
            if (settled.status, settled.attempt) == (FAILED, order.attempt):
                fixed += 1
        for order in await store.stale((CANCELLING,), self._stale_after_s):
            try:
                await self._placement.finish_cancel(order)
                fixed += 1
            except grpc.aio.AioRpcError as error:
                limited_log.log(
                    ("cancel pending", error.code()),
                    logging.WARNING,
                    "cancel still pending",
                    extra={"order_id": order.order_id, "code": error.code().name},
                )
        if fixed:
            log.info("reconciled orders", extra={"count": fixed})
        return fixed

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as error:  # keep reconciling; the next round may succeed
                if connection_problem(error):
                    limited_log.log(
                        "database unavailable", logging.WARNING, "reconciler: database unavailable"
                    )
                else:
                    limited_log.log(
                        ("round failed", type(error).__name__), logging.ERROR,
                        "reconciler round failed", exc_info=error,
                    )  # fmt: skip
            await asyncio.sleep(self._interval_s)
