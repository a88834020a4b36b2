"""The scenarios run for real, short, asserting the shape each answer must show.

Every run has the chart's pod limits (real cgroups), a PostgreSQL database, three
inventory pods and the last of them unlike the others:

- slow pod (a quarter of its peers' CPU limit): round_robin keeps giving it a third of
  the calls; weighted_round_robin, fed by the pods' ORCA load reports, gives it less;
- failing pod (UNAVAILABLE at once, health SERVING): round_robin never stops sending it
  attempts, and once retry throttling (gRFC A6) stops the retries the caller sees about
  a third of its calls fail; gRPC's outlier detection ejects it within a few of its 1 s
  intervals, after which the caller sees no more failures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shop.lab.runner import LabSettings
from shop.lab.scenario_results import FailingPodMode, ScenarioResults, SlowPodMode
from shop.lab.scenarios import FAILING_POD, SLOW_POD, ScenarioLab, ScenarioSettings

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
