"""The lab's figures from a timeline: first traffic, fair share, phase failures."""

from __future__ import annotations

from shop.lab import analysis
from shop.lab.results import PhaseCalls, Timeline
from shop.loadgen.stats import shares


def _timeline(rows: list[dict[str, int]], failures: list[int] | None = None) -> Timeline:
    failures = failures or [0] * len(rows)
    return Timeline.from_json({
        "start_unix": 0.0,
        "bucket_s": 1.0,
        "buckets": [
            {"t": float(i), "calls": sum(row.values()), "failures": failures[i],
             "per_hop": {"inventory": row}}
            for i, row in enumerate(rows)
        ],
    })  # fmt: skip


def test_first_traffic_and_fair_share() -> None:
    timeline = _timeline([
        {"i-0": 10, "i-1": 10},
        {"i-0": 10, "i-1": 10},
        {"i-0": 10, "i-1": 9, "i-2": 1},
        {"i-0": 5, "i-1": 5, "i-2": 5, "i-3": 5},
    ])  # fmt: skip
    new = ["i-2", "i-3"]
    assert analysis.time_to_first_traffic(timeline, "inventory", new, 1.0, 10.0) == 1.5
    # Bucket 2 has i-2 at 5%: below 80% of a fair 25%; bucket 3 is even.
    assert analysis.time_to_fair_share(timeline, "inventory", new, 4, 1.0, 10.0) == 2.5


def test_never_when_new_pods_get_nothing_in_the_window() -> None:
    timeline = _timeline([{"i-0": 10, "i-1": 10}] * 4)
    assert analysis.time_to_first_traffic(timeline, "inventory", ["i-2"], 0.0, 4.0) is None
    assert analysis.time_to_fair_share(timeline, "inventory", ["i-2"], 3, 0.0, 4.0) is None


def test_phase_counts_and_shares() -> None:
    timeline = _timeline([{"i-0": 4}, {"i-0": 4}, {"i-0": 4}], failures=[0, 2, 1])
    assert analysis.phase_calls(timeline, 1.0, 2.0) == PhaseCalls(calls=4, failures=2)
    per_hop = {"inventory": {"i-0": 30, "i-1": 10}}
    found = shares(per_hop["inventory"], ["i-0", "i-1", "i-2"])
    assert found == {"i-0": 0.75, "i-1": 0.25, "i-2": 0.0}
