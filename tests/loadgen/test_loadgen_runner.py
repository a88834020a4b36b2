"""The runner on its own: plain coroutines stand in for calls, so the timing rules
(fixed schedule, intended send time, warm-up, in-flight cap) are tested exactly."""

from __future__ import annotations

import asyncio
import time

import pytest

from shop.loadgen.progress import live_progress
from shop.loadgen.runner import LoadPlan, Runner
from shop.loadgen.stats import CallResult


async def sleeper(delay_s: float) -> CallResult:
    await asyncio.sleep(delay_s)
    return CallResult("Fake", "OK")


async def test_open_loop_sends_at_the_scheduled_rate() -> None:
    sent: list[float] = []

    async def call() -> CallResult:
        sent.append(time.perf_counter())
        return await sleeper(0.001)

    stats = await Runner(LoadPlan(duration_s=1.0, rps=200), call).run()
    # 200 scheduled sends; the last ones finish after the window and still count.
    assert 195 <= stats.calls <= 201
    assert stats.dropped == 0
    # Spread over the second, not sent in a burst (generous: the machine is shared).
    span = sent[-1] - sent[0]
    assert 0.9 <= span <= 1.5
    first_half = sum(1 for t in sent if t - sent[0] < span / 2)
    assert 70 <= first_half <= 130


async def test_open_loop_does_not_wait_for_slow_calls() -> None:
    # Each call takes 0.3 s; a closed loop of one would manage ~2 in 0.6 s.
    plan = LoadPlan(duration_s=0.6, rps=100)
    started = time.perf_counter()
    stats = await Runner(plan, lambda: sleeper(0.3)).run()
    assert 50 <= stats.calls <= 61
    # Bounded by window + one call (~0.9 s), not calls x call time (~18 s).
    assert time.perf_counter() - started < 6


async def test_open_loop_measures_from_the_intended_send_time() -> None:
    """A stall in the client (here: the event loop blocked for 0.3 s) delays the
    calls scheduled meanwhile; their latency must include that delay."""
    stalled = False

    async def call() -> CallResult:
        nonlocal stalled
        if not stalled:
            stalled = True
            time.sleep(0.3)  # noqa: ASYNC251 - on purpose: a stalled client, like a GC pause
        return CallResult("Fake", "OK")

    stats = await Runner(LoadPlan(duration_s=1.0, rps=100), call).run()
    latency = stats.latency_ms()
    # ~30 calls were due during the stall: their latencies spread over 0..300 ms.
    # Measured from the actual send they would all be ~0.
    assert latency["max"] >= 250
    assert latency["p90"] >= 100


async def test_in_flight_cap_drops_instead_of_queueing() -> None:
    # Every call outlives the 0.5 s window: the first five fill the cap for good.
    plan = LoadPlan(duration_s=0.5, rps=100, max_in_flight=5)
    stats = await Runner(plan, lambda: sleeper(1.0)).run()
    assert stats.calls == 5
    assert 40 <= stats.dropped <= 45
    assert stats.dropped + stats.calls <= 50


async def test_closed_loop_keeps_concurrency_in_flight() -> None:
    peak = 0
    runner: Runner

    async def call() -> CallResult:
        nonlocal peak
        peak = max(peak, runner.in_flight)
        await asyncio.sleep(0.01)
        return CallResult("Fake", "OK")

    runner = Runner(LoadPlan(duration_s=0.5, concurrency=4), call)
    stats = await runner.run()
    assert peak == 4
    # Never more than 4 at a time; how many fit in 0.5 s depends on the machine's load.
    assert 4 <= stats.calls <= 4 * 0.5 / 0.01 + 4
    assert runner.snapshot().phase == "done"


async def test_warmup_calls_are_not_recorded() -> None:
    plan = LoadPlan(duration_s=0.5, warmup_s=0.5, rps=100)
    runner = Runner(plan, lambda: sleeper(0))
    stats = await runner.run()
    # 100 sends in all; only the ~50 scheduled after the warm-up count.
    assert 45 <= stats.calls <= 51


async def test_rate_beyond_reach_drops_but_keeps_calls_flowing() -> None:
    """The scheduler yields even when late, so calls complete and free the cap."""
    plan = LoadPlan(duration_s=0.3, rps=100_000, max_in_flight=10)
    started = time.perf_counter()
    stats = await Runner(plan, lambda: sleeper(0.02)).run()
    assert time.perf_counter() - started < 10
    assert stats.calls > 10  # slots were freed and reused during the window
    assert stats.dropped > 0
    assert stats.calls + stats.dropped <= 30_000


async def test_progress_bar_runs_alongside(capsys: pytest.CaptureFixture[str]) -> None:
    runner = Runner(LoadPlan(duration_s=0.6, warmup_s=0.2, concurrency=2), lambda: sleeper(0.01))
    async with live_progress(runner, enabled=True, label="fake"):
        stats = await runner.run()
    assert stats.calls > 0
    assert capsys.readouterr().out == ""  # the bar never touches stdout
