"""The timeline buckets calls per pod by completion time, gaps included."""

from __future__ import annotations

import time

import pytest

from shop.loadgen.stats import CallResult, Stats
from shop.loadgen.timeline import Timeline


def test_calls_land_in_buckets_by_completion_time() -> None:
    timeline = Timeline(bucket_s=0.5, start_unix=1000.0)
    timeline.record("gateway/g-0 inventory/i-0", failed=False, now_unix=1000.1)
    timeline.record("gateway/g-0 inventory/i-1", failed=False, now_unix=1000.4)
    timeline.record(None, failed=True, now_unix=1001.2)
    data = timeline.to_json()
    assert data["bucket_s"] == 0.5
    buckets = data["buckets"]
    assert [b["t"] for b in buckets] == [0.0, 0.5, 1.0]
    assert buckets[0]["per_hop"]["inventory"] == {"i-0": 1, "i-1": 1}
    assert buckets[1] == {"t": 0.5, "calls": 0, "failures": 0, "per_hop": {}}
    assert buckets[2]["failures"] == 1 and buckets[2]["per_hop"] == {}


def test_stats_feed_the_timeline_and_the_summary_carries_it() -> None:
    timeline = Timeline(bucket_s=1.0, start_unix=time.time())
    stats = Stats(timeline)
    stats.record(CallResult("PlaceOrder", "OK", "gateway/g-0 orders/o-1"), 0.01)
    stats.record(CallResult("PlaceOrder", "UNAVAILABLE"), 0.01)
    stats.record(CallResult("PlaceOrder", "FAILED_PRECONDITION"), 0.01)
    buckets = timeline.to_json()["buckets"]
    assert sum(b["calls"] for b in buckets) == 3
    # Out of stock is a business outcome, not a failure of the system.
    assert sum(b["failures"] for b in buckets) == 1


def test_bucket_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        Timeline(bucket_s=0, start_unix=0.0)
