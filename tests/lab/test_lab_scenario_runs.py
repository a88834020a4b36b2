"""The scenarios run for real, short, asserting the shape each answer must show.

Every run has the chart's pod limits (real cgroups), a PostgreSQL database, three
inventory pods and the last of them unlike the others:

- slow pod (a quarter of its peers' CPU limit): round_robin keeps giving it a third of
  the calls; weighted_round_robin, fed by the pods' ORCA load reports, gives it less;
- failing pod (UNAVAILABLE at once, health SERVING): round_robin never stops sending it
  attempts, and once retry throttling (gRFC A6) stops the retries the caller sees about
  a third of its calls fail; gRPC's outlier detection ejects it within a few of its 1 s
  intervals, after which the caller sees no more failures;
- a new pod under headless waits for its callers' connections to age out: the wait
  rises with the max connection age.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shop.lab.runner import LabSettings
from shop.lab.scenario_results import FailingPodMode, ScenarioResults, SlowPodMode, WaitPoint
from shop.lab.scenarios import (
    FAILING_POD,
    NEW_POD_WAIT,
    SLOW_POD,
    WAIT_AGE,
    ScenarioLab,
    ScenarioSettings,
    WaitSpec,
)

from ..support.cgroups import require_cgroups


@pytest.fixture(autouse=True)
def _cgroups() -> None:
    require_cgroups()


def _settings(tmp_path: Path) -> ScenarioSettings:
    lab = LabSettings(data_dir=tmp_path, orders=2, inventory_start=3, steady_s=6.0, concurrency=16)
    return ScenarioSettings(lab, failing_s=10.0)


def _read_back(results: ScenarioResults) -> None:
    assert ScenarioResults.from_json(json.loads(json.dumps(results.to_json()))) == results


async def test_weighted_round_robin_moves_calls_off_a_slow_pod(tmp_path: Path) -> None:
    steps: list[str] = []
    lab = ScenarioLab(_settings(tmp_path), steps.append)
    results = await lab.run_scenario(SLOW_POD, ["headless", "headless-wrr"])
    _read_back(results)
    assert any("inventory-2 limited to 62m" in step for step in steps)
    rr, wrr = results.modes
    assert isinstance(rr, SlowPodMode) and isinstance(wrr, SlowPodMode)
    assert rr.slow_cores == 0.062 and rr.peer_cores == 0.25
    # round_robin: an even third, whatever the pod can do.
    assert abs(rr.slow_share - 1 / 3) < 0.03, rr.steady.shares
    # weighted_round_robin: the pod reports full utilization at a quarter of the peers'
    # rate, and its weight falls (by how much depends on how busy the peers report).
    assert wrr.slow_share < rr.slow_share - 0.04, (rr.steady.shares, wrr.steady.shares)
    for mode in (rr, wrr):
        assert mode.steady.failures == 0, mode.steady.status_counts
        assert mode.fixed_rate.calls > 0


async def test_outlier_detection_ejects_a_failing_pod_and_round_robin_never(
    tmp_path: Path,
) -> None:
    lab = ScenarioLab(_settings(tmp_path), lambda step: None)
    results = await lab.run_scenario(FAILING_POD, ["headless", "headless-outlier"])
    _read_back(results)
    rr, outlier = results.modes
    assert isinstance(rr, FailingPodMode) and isinstance(outlier, FailingPodMode)
    for mode in (rr, outlier):
        # Health stayed SERVING and the pod answered: every attempt it got, it failed.
        failing = mode.attempts[mode.failing_pod]
        assert failing.answered > 0 and failing.failed == failing.answered
        healthy = [a for pod, a in mode.attempts.items() if pod != mode.failing_pod]
        assert len(healthy) == 2 and all(a.failed == 0 for a in healthy)
    assert not rr.ejected and abs(rr.failing_share - 1 / 3) < 0.05
    assert rr.failures > 0 and rr.status_counts.get("UNAVAILABLE", 0) == rr.failures
    # Ejected within a few 1 s intervals (requestVolume 10 is reached in the first).
    assert outlier.ejected, outlier.attempt_timeline
    assert outlier.stopped_after_s is not None and outlier.stopped_after_s < 5.0
    assert outlier.failing_share < 0.1
    assert outlier.failures < rr.failures / 5


async def test_a_new_pods_wait_rises_with_the_max_connection_age(tmp_path: Path) -> None:
    """With re-resolution at 1 s and TTL 1 s, what a new pod waits for under headless is
    its client's connection aging out. Published right after the connection was
    renewed, it waits about the whole age (gRPC jitters it by 10%): at 1 s a second or
    two, at 6 s five seconds at least."""
    short, long = (WaitSpec("headless", WAIT_AGE, age, 1.0, 1.0, 1) for age in (1.0, 6.0))
    lab = LabSettings(data_dir=tmp_path, concurrency=16)
    settings = ScenarioSettings(lab, settle_s=2.0, sweep=(short, long))
    results = await ScenarioLab(settings, lambda step: None).run_scenario(
        NEW_POD_WAIT, ["headless"]
    )
    _read_back(results)
    fast, slow = results.modes
    assert isinstance(fast, WaitPoint) and isinstance(slow, WaitPoint)
    assert fast.fair_share_s is not None and slow.fair_share_s is not None, results.modes
    assert fast.fair_share_s < slow.fair_share_s, results.modes
    assert slow.fair_share_s >= 5.0, slow
    assert fast.fair_share_s <= 3.5, fast
    assert slow.first_traffic_s is not None and slow.first_traffic_s >= 5.0, slow
