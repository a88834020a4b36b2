"""One change feed per orders replica, fanned out to its WatchOrder streams.

Each stream used to poll the database for its own order twice a second: 1,000 idle
streams cost an orders replica most of two cores and every other call its latency.
Here a replica keeps a registry of watched order ids and their subscribers, and ONE
loop polls the orders table for all of them once per interval, pushing each new
state to the subscribers that have not seen it. The cost follows the number of
distinct watched orders (one light query per interval for up to 500 of them), not
the number of streams, and nothing is polled while nobody watches.

Why polling, and not PostgreSQL's LISTEN/NOTIFY: replicas share the database, not
memory, so a change made through any replica must reach every replica's watchers,
and the feed has to come from the database. SQLite (the embedded default) has no
notification across processes at all, so it needs polling anyway; one poll per
replica per interval is cheap enough on both that a second, PostgreSQL-only path
(a dedicated listening connection to keep alive and re-establish, plus a trigger or
a NOTIFY next to every state change in the saga's code) is not worth its upkeep.

Why the poll compares each watched order's (status, attempt, updated_at) with what
its subscribers last saw, rather than reading rows with ``updated_at`` past a
high-water mark: ``updated_at`` is stamped by the writing replica's clock before its
transaction commits, so a change can become visible after a later-stamped one was
already seen (a slower commit, a waiting SQLite writer, clock skew between pods) and
a high-water mark would skip it for good. Comparing stamps cannot miss a change and
reads only the watched rows, by primary key.

A stream's first event is the order as read at subscribe time; the registration
carries that state's stamp, so a change committed between that read and the first
poll is still pushed. Subscribers that joined during a poll are left to the next one,
so no one is sent a state older than the one they started from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from shop.orders.store import OrderRecord, OrderStore

log = logging.getLogger(__name__)

Stamp = tuple[str, int, str]


def stamp_of(order: OrderRecord) -> Stamp:
    """What identifies one state of an order (every transition sets updated_at)."""
    return (order.status, order.attempt, order.updated_at)


class Subscription:
    """One stream's view of the feed: the states of its order it has not taken yet."""

    def __init__(self, order: OrderRecord) -> None:
        self.order_id = order.order_id
        # The last state this subscriber was given (or started from).
        self.stamp = stamp_of(order)
        # A handful of states per order at most (PENDING..CANCELLED), so unbounded is fine.
        self._changes: asyncio.Queue[OrderRecord] = asyncio.Queue()

    async def next(self) -> OrderRecord:
        """The order's next state, as soon as a poll has seen it."""
        return await self._changes.get()

    def _push(self, order: OrderRecord) -> None:
        self.stamp = stamp_of(order)
        self._changes.put_nowait(order)


class OrderWatchHub:
    """The registry of watched orders and the one loop that polls for their changes."""

    def __init__(self, store: OrderStore, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._watched: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._sleeping = False
        # Loops stopped while they slept, kept referenced until they are gone
        # (asyncio holds only weak references to tasks).
        self._retiring: set[asyncio.Task[None]] = set()
        # Poll rounds done (one batch query each, more only for changed orders).
        self.polls = 0

    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._watched.values())

    @property
    def watched_orders(self) -> int:
        return len(self._watched)

    @contextlib.contextmanager
    def subscribe(self, order: OrderRecord) -> Iterator[Subscription]:
        """Registers a subscriber for ``order`` (as the caller just read it) while the
        block runs; its :meth:`Subscription.next` gives every later state."""
        subscription = Subscription(order)
        self._watched.setdefault(order.order_id, set()).add(subscription)
        self._ensure_running()
        try:
            yield subscription
        finally:
            subscribers = self._watched.get(order.order_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._watched[order.order_id]
            if not self._watched:
                self._stop_idle_loop()

    async def poll_once(self) -> int:
        """One round: reads the watched orders' states and pushes the new ones.
        Returns how many events were pushed."""
        # Only subscribers registered now: whoever joins during the query started from
        # a read that may be newer than what the query returns.
        snapshot = {order_id: list(subs) for order_id, subs in self._watched.items()}
        if not snapshot:
            return 0
        known: dict[str, Stamp | None] = {}
        for order_id, subs in snapshot.items():
            stamps = {sub.stamp for sub in subs}
            # Subscribers at different states (one joined later): have the row read in
            # full, and sort it out per subscriber below.
            known[order_id] = stamps.pop() if len(stamps) == 1 else None
        changed = await self._store.changed_orders(known)
        self.polls += 1
        pushed = 0
        for order in changed:
            stamp = stamp_of(order)
            for subscription in snapshot[order.order_id]:
                if subscription.stamp != stamp:
                    subscription._push(order)
                    pushed += 1
        return pushed

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _stop_idle_loop(self) -> None:
        """Nobody watches any more: a sleeping loop is stopped at once (a polling one
        ends after its round), so an idle replica runs no loop at all."""
        if self._task is not None and self._sleeping:
            task, self._task = self._task, None
            task.cancel()
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _run(self) -> None:
        failing = False
        while self._watched:
            self._sleeping = True
            try:
                await asyncio.sleep(self._interval_s)
            finally:
                self._sleeping = False
            if not self._watched:
                return
            try:
                await self.poll_once()
            except Exception:
                # Streams stay open and catch up once the database answers again (the
                # stamps they hold are still right); one line per outage, not per poll.
                if not failing:
                    log.warning("watching orders: polling failed; retrying", exc_info=True)
                failing = True
            else:
                if failing:
                    log.info("watching orders: polling works again")
                failing = False

    async def close(self) -> None:
        """Stops the loop (on shutdown, once the server no longer serves streams)."""
        tasks = [*self._retiring, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
