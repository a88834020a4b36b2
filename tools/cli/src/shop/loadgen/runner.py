"""Drives calls for a fixed time: closed loop (N workers) or open loop (fixed rate).

Closed loop: ``concurrency`` workers, each sending its next call as soon as the
previous one returns. It measures what a fixed pool of clients experiences, and by
construction sends less when the server slows down.

Open loop: calls are scheduled at fixed times ``start + i / rps`` whatever happens to
earlier calls, the way independent users arrive. Latency is measured from the
*intended* send time, not from when the call actually left: if the client falls
behind (a stall in this process, a busy event loop) the delay counts, as it would
for a user. Measuring from the actual send would hide exactly the slow periods
("coordinated omission"). ``max_in_flight`` bounds memory when the server stops
answering; a scheduled call that finds the cap reached is not sent and counts as
*dropped*.

Calls that start during the warm-up are made but not recorded. Calls that start in
the window are recorded even if they finish after it, so a run lasts at most
warm-up + duration + one call timeout. The runner knows nothing about gRPC: it
awaits whatever ``next_call`` returns.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shop.loadgen.stats import CallResult, Stats

NextCall = Callable[[], Awaitable[CallResult]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class LoadPlan:
    duration_s: float
    warmup_s: float = 0.0
    concurrency: int = 32
    rps: float | None = None  # set: open loop at this rate; None: closed loop
    max_in_flight: int = 1000

    def __post_init__(self) -> None:
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.warmup_s < 0:
            raise ValueError(f"warmup_s must be >= 0, got {self.warmup_s}")
        if self.concurrency < 1 or self.max_in_flight < 1:
            raise ValueError("concurrency and max_in_flight must be >= 1")
        if self.rps is not None and self.rps <= 0:
            raise ValueError(f"rps must be > 0, got {self.rps}")

    @property
    def mode(self) -> str:
        return "closed" if self.rps is None else "open"

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.duration_s


@dataclass(frozen=True)
class Snapshot:
    """What the progress bar shows; cheap to take while calls run."""

    elapsed_s: float
    phase: str  # "warmup" | "measuring" | "finishing" | "done"
    calls: int
    errors: int
    in_flight: int


class Runner:
    def __init__(
        self,
        plan: LoadPlan,
        next_call: NextCall,
        stats: Stats | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.plan = plan
        self.next_call = next_call
        self.stats = stats or Stats()
        self.clock = clock
        self.in_flight = 0
        self._started: float | None = None
        self._done = False

    def snapshot(self) -> Snapshot:
        if self._started is None:
            return Snapshot(0.0, "warmup", 0, 0, 0)
        elapsed = self.clock() - self._started
        if self._done:
            phase = "done"
        elif elapsed < self.plan.warmup_s:
            phase = "warmup"
        elif elapsed < self.plan.total_s:
            phase = "measuring"
        else:
            phase = "finishing"
        return Snapshot(elapsed, phase, self.stats.calls, self.stats.errors, self.in_flight)

    async def run(self) -> Stats:
        start = self._started = self.clock()
        measure_from = start + self.plan.warmup_s
        end = measure_from + self.plan.duration_s
        try:
            async with asyncio.TaskGroup() as group:
                if self.plan.rps is None:
                    for _ in range(self.plan.concurrency):
                        group.create_task(self._worker(measure_from, end))
                else:
                    await self._schedule(group, self.plan.rps, start, measure_from, end)
        finally:
            self._done = True
        return self.stats

    async def _call(self, started_at: float, measured: bool) -> None:
        """One call; the caller has already counted it in ``in_flight``."""
        try:
            result = await self.next_call()
        finally:
            self.in_flight -= 1
        if measured:
            self.stats.record(result, self.clock() - started_at)

    async def _worker(self, measure_from: float, end: float) -> None:
        while (now := self.clock()) < end:
            self.in_flight += 1
            await self._call(now, now >= measure_from)

    async def _schedule(
        self, group: asyncio.TaskGroup, rps: float, start: float, measure_from: float, end: float
    ) -> None:
        """Open loop: launches call ``i`` at ``start + i / rps`` (at once if already late)."""
        interval = 1.0 / rps
        for i in itertools.count():
            # Multiplying (not accumulating) keeps the schedule free of float drift.
            intended = start + i * interval
            if intended >= end:
                return
            # Sleeping 0 when late still yields, so a rate beyond this process's reach
            # cannot starve the calls in flight (they fill the cap, the rest drop).
            await asyncio.sleep(max(intended - self.clock(), 0.0))
            measured = intended >= measure_from
            if self.in_flight >= self.plan.max_in_flight:
                if measured:
                    self.stats.record_dropped()
                continue
            self.in_flight += 1
            group.create_task(self._call(intended, measured))
