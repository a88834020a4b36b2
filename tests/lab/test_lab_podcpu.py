"""Per-pod CPU from cgroup counters: windows, the timeline, and the offered rate the
lab derives from them. Counters are given here; tests/local/test_cgroups.py reads
real ones."""

from __future__ import annotations

import pytest

from shop.lab import capacity
from shop.lab.podcpu import PodCpuSampler, Reading, pod_cpu
from shop.lab.results import PodCpu, SteadyState
from shop.local.cgroups import CpuStat, PodLimits


class FakeCgroup:
    def __init__(self, limits: PodLimits) -> None:
        self._limits = limits
        self.stat = CpuStat(usage_s=0.0, periods=0, throttled_periods=0, throttled_s=0.0)

    @property
    def limits(self) -> PodLimits:
        return self._limits

    def cpu_stat(self) -> CpuStat:
        return self.stat


def test_a_window_is_the_difference_of_two_readings() -> None:
    before = Reading(100.0, {"orders-0": CpuStat(1.0, 10, 2, 0.1)})
    after = Reading(102.0, {"orders-0": CpuStat(1.5, 30, 17, 1.1)})
    figures = pod_cpu("orders-0", 0.25, before, after)
    assert figures == PodCpu("orders-0", 0.25, cores=0.25, throttled_share=0.75, throttled_s=1.0)


def test_a_pod_that_did_nothing_was_never_throttled() -> None:
    idle = CpuStat(0.5, 10, 0, 0.0)
    figures = pod_cpu(
        "orders-1", 0.25, Reading(0.0, {"orders-1": idle}), Reading(1.0, {"orders-1": idle})
    )
    assert figures.cores == 0.0 and figures.throttled_share == 0.0


def test_the_sampler_bounds_windows_and_draws_a_timeline() -> None:
    busy, idle = FakeCgroup(PodLimits(250, 256)), FakeCgroup(PodLimits(250, 256))
    sampler = PodCpuSampler(lambda: {"orders-0": busy, "orders-1": idle}, interval_s=1.0)
    for second in range(4):
        busy.stat = CpuStat(0.25 * second, 10 * second, 9 * second, 0.07 * second)
        sampler.read()
        # Readings carry the wall clock; pin them to whole seconds for the test.
        sampler.readings[-1] = Reading(1000.0 + second, sampler.readings[-1].stats)
    (busiest, quiet) = sampler.window(1000.0, 1003.0)
    assert busiest == PodCpu("orders-0", 0.25, 0.25, 0.9, 0.21)
    assert quiet.cores == 0.0 and quiet.limit_cores == 0.25
    timeline = sampler.timeline(origin_unix=999.0, start_unix=1000.0, end_unix=1003.0)
    assert [s.t for s in timeline.pods["orders-0"]] == [1.0, 2.0, 3.0]
    assert {s.cores for s in timeline.pods["orders-0"]} == {0.25}
    assert timeline.limits == {"orders-0": 0.25, "orders-1": 0.25}


def _steady(pods: tuple[PodCpu, ...], calls: int) -> SteadyState:
    return SteadyState(
        calls=calls,
        calls_per_s=calls / 10.0,
        p50_ms=10.0,
        p99_ms=50.0,
        shares={},
        imbalance={},
        cpu_s_per_1000_calls=None,
        failures=0,
        pods=pods,
    )


def test_capacity_is_bounded_by_the_service_that_runs_out_first() -> None:
    # 10 s, 500 calls: orders used 2.5 CPU s (5 ms a call), inventory 1.0 (2 ms).
    pods = (
        PodCpu("gateway-0", 0.5, 0.05, 0.0, 0.0),
        PodCpu("orders-0", 0.25, 0.25, 0.9, 5.0),
        PodCpu("orders-1", 0.25, 0.0, 0.0, 0.0),
        PodCpu("inventory-0", 0.25, 0.1, 0.0, 0.0),
    )
    offered = capacity.derive(
        _steady(pods, 500),
        window_s=10.0,
        replicas={"gateway": 1, "orders": 2, "inventory": 2},
        limit_cores={"gateway": 0.5, "orders": 0.25, "inventory": 0.25},
        load_factor=0.6,
        measured_in="clusterip",
    )
    assert offered.cpu_ms_per_call == {"gateway": 1.0, "orders": 5.0, "inventory": 2.0}
    # orders: 2 pods x 0.25 core / 5 ms = 100/s; inventory 250/s; gateway 500/s.
    assert offered.bottleneck == "orders"
    assert offered.capacity_per_s == pytest.approx(100.0)
    assert offered.rate == pytest.approx(60.0)
    sentence = capacity.describe(offered, 250.0)
    assert "60 calls/s" in sentence and "5.0 ms CPU per call" in sentence
    assert "clusterip" in sentence and "250 ms" in sentence


def test_without_pod_figures_the_rate_is_a_share_of_the_throughput() -> None:
    offered = capacity.derive(_steady((), 500), 10.0, {"orders": 2}, {}, 0.5, "headless")
    assert offered.bottleneck is None and offered.rate == 25.0
    assert "no pod limits" in capacity.describe(offered, 250.0)


def test_a_given_rate_is_used_as_it_is() -> None:
    offered = capacity.given(42.0)
    assert offered.rate == 42.0 and offered.capacity_per_s is None
    assert "--rate" in capacity.describe(offered, 100.0)
