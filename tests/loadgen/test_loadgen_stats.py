"""Stats math: percentiles, shares, imbalance, status classes and the JSON keys."""

from __future__ import annotations

import pytest

from shop.loadgen.stats import CallResult, RunInfo, Stats, imbalance, shares

INFO = RunInfo(
    workload="mix",
    mode="closed",
    target="ipv4:127.0.0.1:1",
    lb_policy="pick_first",
    channels=1,
    concurrency=4,
    rps=None,
    duration_s=2.0,
    warmup_s=0.0,
)

JSON_KEYS = {
    "workload", "mode", "target", "lb_policy", "channels", "concurrency", "rps",
    "duration_s", "warmup_s", "calls", "calls_per_s", "latency_ms", "status_counts",
    "method_counts", "per_hop", "imbalance", "errors", "failures", "dropped",
    "timeouts", "objective_ms", "within_objective", "goodput_per_s",
}  # fmt: skip


def test_percentiles_of_known_samples() -> None:
    stats = Stats()
    for ms in range(1, 1001):  # 1 ms .. 1000 ms, uniformly
        stats.record(CallResult("Echo", "OK"), ms / 1000)
    latency = stats.latency_ms()
    # HDR with 3 significant digits: within 0.1 % (plus one bucket) of the true value.
    assert latency["p50"] == pytest.approx(500, rel=2e-3)
    assert latency["p90"] == pytest.approx(900, rel=2e-3)
    assert latency["p99"] == pytest.approx(990, rel=2e-3)
    assert latency["max"] == 1000.0  # kept exactly, not from the histogram


def test_empty_stats_report_zeros() -> None:
    summary = Stats().summarize(INFO)
    assert summary.calls == 0
    assert summary.latency_ms == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    assert summary.to_json()["calls_per_s"] == 0.0


def test_out_of_range_latency_is_clamped_not_lost() -> None:
    stats = Stats()
    stats.record(CallResult("Echo", "OK"), 0.0)
    stats.record(CallResult("Echo", "OK"), 10_000.0)  # beyond the histogram's range
    assert stats.calls == 2
    assert stats.latency_ms()["max"] == 10_000_000.0


@pytest.mark.parametrize(
    ("counts", "expected_pods", "value"),
    [
        ({"a": 10, "b": 10, "c": 10}, 0, 1.0),
        ({"a": 30}, 0, 1.0),  # one pod seen, nothing else known: looks even
        ({"a": 30}, 3, 3.0),  # ...but three exist: pick_first-like
        ({"a": 20, "b": 10}, 0, 20 * 2 / 30),
        ({"a": 20, "b": 10}, 4, 20 * 4 / 30),
        ({}, 3, 0.0),
        ({"a": 30, "b": 10}, 3, 2.25),  # the lab: a third pod served nothing
    ],
)
def test_imbalance(counts: dict[str, int], expected_pods: int, value: float) -> None:
    assert imbalance(counts, expected_pods) == pytest.approx(value)


def test_shares_sum_to_one() -> None:
    result = shares({"a": 1, "b": 3})
    assert result == {"a": 0.25, "b": 0.75}


def test_routes_count_per_pod_per_hop() -> None:
    stats = Stats()
    routes = [
        "gateway/gateway-0 orders/orders-0 inventory/inventory-1",
        "gateway/gateway-0 orders/orders-1 inventory/inventory-0",
        "gateway/gateway-0 inventory/inventory-1",
        None,  # e.g. a failed call: no trailer
    ]
    for route in routes:
        stats.record(CallResult("PlaceOrder", "OK" if route else "UNAVAILABLE", route), 0.01)
    summary = stats.summarize(INFO, expected_pods={"orders": 3})
    assert summary.per_hop == {
        "gateway": {"gateway-0": 3},
        "orders": {"orders-0": 1, "orders-1": 1},
        "inventory": {"inventory-0": 1, "inventory-1": 2},
    }
    assert summary.imbalance() == {
        "gateway": 1.0,
        "orders": 1.5,  # 1 * 3 / 2: the third expected pod got nothing
        "inventory": pytest.approx(4 / 3, abs=1e-3),
    }


def test_errors_failures_and_json_shape() -> None:
    stats = Stats()
    for code, n in (("OK", 7), ("FAILED_PRECONDITION", 2), ("UNAVAILABLE", 1)):
        for _ in range(n):
            stats.record(CallResult("PlaceOrder", code), 0.002)
    stats.record_dropped()
    doc = stats.summarize(INFO).to_json()
    assert set(doc) == JSON_KEYS
    assert doc["calls"] == 10
    assert doc["calls_per_s"] == 5.0
    assert doc["errors"] == 3  # every non-OK status
    assert doc["failures"] == 1  # out of stock is an expected business outcome
    assert doc["dropped"] == 1
    assert doc["status_counts"] == {"OK": 7, "FAILED_PRECONDITION": 2, "UNAVAILABLE": 1}
    assert set(doc["latency_ms"]) == {"p50", "p90", "p99", "max"}


def test_objective_counts_each_call_and_every_miss() -> None:
    """A call meets the objective only if it ended with an expected status in time:
    a fast failure, a slow success and a dropped call are all misses."""
    stats = Stats(objective_s=0.100)
    for _ in range(6):
        stats.record(CallResult("PlaceOrder", "OK"), 0.050)
    stats.record(CallResult("PlaceOrder", "FAILED_PRECONDITION"), 0.020)  # out of stock: met
    stats.record(CallResult("PlaceOrder", "OK"), 0.150)  # too slow
    stats.record(CallResult("PlaceOrder", "UNAVAILABLE"), 0.001)  # fast, but failed
    stats.record(CallResult("PlaceOrder", "DEADLINE_EXCEEDED"), 5.0)
    stats.record_dropped()
    doc = stats.summarize(INFO).to_json()
    assert doc["objective_ms"] == 100.0
    assert doc["within_objective"] == pytest.approx(7 / 11, abs=1e-4)
    assert doc["goodput_per_s"] == 3.5  # 7 good calls in the 2 s window
    assert doc["timeouts"] == 1


def test_without_an_objective_goodput_is_every_expected_outcome() -> None:
    stats = Stats()
    stats.record(CallResult("PlaceOrder", "OK"), 9.0)
    stats.record(CallResult("PlaceOrder", "UNAVAILABLE"), 0.001)
    doc = stats.summarize(INFO).to_json()
    assert doc["within_objective"] is None and doc["objective_ms"] is None
    assert doc["goodput_per_s"] == 0.5
