"""Stream caps and lifetimes (``shop.runtime.streams``)."""

from __future__ import annotations

import grpc
import pytest

from shop.runtime.config import ConfigError
from shop.runtime.streams import LIFETIME_JITTER, StreamConfig, StreamLimiter, StreamLimitExceeded


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
