"""Stream caps and lifetimes, and lifetimes ended by the drain (``shop.runtime.streams``)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from shop.runtime.config import ConfigError
from shop.runtime.streams import (
    LIFETIME_JITTER,
    Lifetime,
    StreamConfig,
    StreamLifetimes,
    StreamLimiter,
    StreamLimitExceeded,
)


async def test_caps_refuse_and_slots_come_back_however_a_stream_ends() -> None:
    limiter = StreamLimiter("gateway", "WatchOrder streams", max_per_replica=3, max_per_caller=2)
    async with limiter.acquire("a"), limiter.acquire("a"):
        with pytest.raises(StreamLimitExceeded) as per_caller:
            async with limiter.acquire("a"):
                pass
        assert per_caller.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "SHOP_STREAMS_MAX_PER_CALLER=2" in str(per_caller.value)
        async with limiter.acquire("b"):
            with pytest.raises(StreamLimitExceeded) as per_replica:
                async with limiter.acquire("c"):
                    pass
            assert "SHOP_STREAMS_MAX_PER_REPLICA=3" in str(per_replica.value)
        with pytest.raises(RuntimeError):
            async with limiter.acquire("b"):
                raise RuntimeError("the stream failed")
        assert (limiter.open, limiter.open_for("a"), limiter.open_for("b")) == (2, 2, 0)
    assert limiter.open == 0 and limiter.open_for("a") == 0


async def test_without_a_per_caller_cap_one_caller_may_fill_the_replica() -> None:
    limiter = StreamLimiter("orders", "WatchOrder streams", max_per_replica=2, max_per_caller=None)
    async with limiter.acquire("gateway"), limiter.acquire("gateway"):
        with pytest.raises(StreamLimitExceeded, match="SHOP_STREAMS_MAX_PER_REPLICA=2"):
            async with limiter.acquire("gateway"):
                pass


def test_lifetimes_are_jittered_below_the_maximum() -> None:
    config = StreamConfig(max_per_replica=1, max_per_caller=1, max_lifetime_s=300)
    lifetimes = [config.lifetime_s() for _ in range(200)]
    assert all(300 * (1 - LIFETIME_JITTER) <= s <= 300 for s in lifetimes)
    # Spread out, not one value: streams opened together end at different times.
    assert max(lifetimes) - min(lifetimes) > 300 * LIFETIME_JITTER / 2


def test_settings_parse_and_reject_what_cannot_bound_a_stream() -> None:
    assert StreamConfig.from_env({}) == StreamConfig(1000, 10, 300.0)
    for name, value in (
        ("SHOP_STREAM_MAX_LIFETIME_S", "0"),
        ("SHOP_STREAM_MAX_LIFETIME_S", "inf"),
        ("SHOP_STREAM_MAX_LIFETIME_S", "nan"),
        ("SHOP_STREAMS_MAX_PER_REPLICA", "0"),
        ("SHOP_STREAMS_MAX_PER_CALLER", "-1"),
    ):
        with pytest.raises(ConfigError, match=name):
            StreamConfig.from_env({name: value})


async def _next_event(lifetime: Lifetime, event: asyncio.Event) -> str:
    """A stream's wait for its next event, as the WatchOrder handlers wait."""
    try:
        async with lifetime.timeout():
            await event.wait()
            return "event"
    except TimeoutError:
        return "ended"


async def test_a_wait_gets_its_event_in_time_and_ends_at_the_lifetime() -> None:
    lifetimes = StreamLifetimes(StreamConfig(10, 10, max_lifetime_s=0.2))
    event = asyncio.Event()
    event.set()
    with lifetimes.start() as lifetime:
        assert await _next_event(lifetime, event) == "event"
        event.clear()
        assert await asyncio.wait_for(_next_event(lifetime, event), 5) == "ended"
        assert lifetime.remaining_s() == 0


async def test_end_all_ends_waits_in_progress_and_streams_started_after_it() -> None:
    lifetimes = StreamLifetimes(StreamConfig(10, 10, max_lifetime_s=600))
    never = asyncio.Event()
    with lifetimes.start() as one, lifetimes.start() as two:
        waits = [asyncio.create_task(_next_event(lifetime, never)) for lifetime in (one, two)]
        await asyncio.sleep(0)  # both are now waiting
        assert lifetimes.open == 2 and not any(wait.done() for wait in waits)
        lifetimes.end_all()
        assert await asyncio.wait_for(asyncio.gather(*waits), 5) == ["ended", "ended"]
    assert lifetimes.open == 0
    # One that was still being set up when the drain came ends at its first wait.
    with lifetimes.start() as late:
        assert late.remaining_s() == 0
        assert await asyncio.wait_for(_next_event(late, never), 5) == "ended"


async def test_ending_a_lifetime_outside_a_wait_cancels_nothing_else() -> None:
    lifetimes = StreamLifetimes(StreamConfig(10, 10, max_lifetime_s=600))
    with lifetimes.start() as lifetime:
        # Ended inside the timed block, which then finishes without waiting again:
        # the cancellation scheduled for that wait must not land on what follows.
        async with lifetime.timeout():
            lifetimes.end_all()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Between waits (the handler yielding an event): the next wait ends at once.
        lifetime.end()
        assert await _next_event(lifetime, asyncio.Event()) == "ended"
