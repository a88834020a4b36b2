"""Finishes orders that a crash or an unreachable inventory left half-done.

Every replica runs it; the work is idempotent (Release by reservation id, state
transitions conditional on the current state), so replicas never conflict.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from shop.orders.placement import OrderPlacement
from shop.orders.store import CANCELLING, PENDING

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, placement: OrderPlacement, interval_s: float, stale_after_s: float) -> None:
        self._placement = placement
        self._interval_s = interval_s
        # Longer than any Reserve can take (its timeout is capped), so an order still
        # being placed is never touched.
        self._stale_after_s = stale_after_s

    async def run_once(self) -> int:
        fixed = 0
        store = self._placement.store
        for order in await store.stale((PENDING,), self._stale_after_s):
            await self._placement.roll_back(order)
            fixed += 1
        for order in await store.stale((CANCELLING,), self._stale_after_s):
            try:
                await self._placement.finish_cancel(order)
                fixed += 1
            except grpc.aio.AioRpcError as error:
                log.warning(
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
            except Exception:  # keep reconciling; the next round may succeed
                log.exception("reconciler round failed")
            await asyncio.sleep(self._interval_s)
