"""One short lab run per mode, asserting the shape each mode must show.

Exact numbers depend on the machine; the shapes do not: ClusterIP pins a channel to
one pod and never sees new ones, headless without a max connection age balances but
never sees new pods, with it (the chart's headless) they are picked up within a few
seconds, the istio (sidecar) and proxyless modes rebalance fastest, and no mode loses
calls in a rollout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shop.lab.results import ModeResult
from shop.lab.runner import LabSettings, run_mode

SCALE_WINDOW_S = 10.0


def _settings(tmp_path: Path) -> LabSettings:
    return LabSettings(
        data_dir=tmp_path,
        orders=2,
        inventory_start=2,
        inventory_scaled=4,
        steady_s=3.0,
        scale_window_s=SCALE_WINDOW_S,
        settle_s=2.0,
        concurrency=8,
    )


async def _run(mode: str, tmp_path: Path) -> ModeResult:
    steps: list[str] = []
    result = await run_mode(mode, _settings(tmp_path), steps.append)
    assert any("scale-up" in step for step in steps)
    # What the lab writes to lab.json reads back as the same result.
    assert ModeResult.from_json(mode, json.loads(json.dumps(result.to_json()))) == result
    return result


def _assert_no_lost_calls(result: ModeResult, rollout_tolerance: float = 0.0) -> None:
    assert result.steady.failures == 0, result.steady.status_counts
    assert result.rollout.calls > 0
    assert result.rollout.failures <= rollout_tolerance * result.rollout.calls, result.status_counts
    assert result.scale_down.calls > 0
    assert result.scale_down.failures == 0
    kinds = [event.kind for event in result.events]
    assert kinds == ["scale-up", "restart", "restart", "restart", "restart", "scale-down"]


async def test_clusterip_pins_one_pod_and_never_rebalances(tmp_path: Path) -> None:
    result = await _run("clusterip", tmp_path)
    steady = result.steady
    # One gateway channel -> one orders pod -> its one connection -> one inventory pod.
    assert steady.imbalance["orders"] == pytest.approx(2.0)
    assert steady.imbalance["inventory"] == pytest.approx(2.0)
    assert result.scale_up.first_traffic_s is None
    # Connection-level balancing only: a restart moves the pinned connection, and a
    # call caught in the move is occasionally lost (seen once: 1 of 2,385).
    _assert_no_lost_calls(result, rollout_tolerance=0.01)


async def test_headless_without_max_age_balances_but_never_sees_new_pods(tmp_path: Path) -> None:
    result = await _run("headless-no-maxage", tmp_path)
    steady = result.steady
    assert steady.imbalance["orders"] < 1.3
    assert steady.imbalance["inventory"] < 1.3
    assert result.scale_up.first_traffic_s is None
    assert result.control_plane["dns_queries"] > 0
    _assert_no_lost_calls(result)


async def test_headless_with_max_age_picks_up_new_pods(tmp_path: Path) -> None:
    result = await _run("headless", tmp_path)
    assert result.steady.imbalance["inventory"] < 1.3
    first = result.scale_up.first_traffic_s
    # Within max age (2 s) + grace (1 s) + re-resolution (1 s), with slack for the box.
    assert first is not None and first < SCALE_WINDOW_S
    _assert_no_lost_calls(result)


@pytest.mark.parametrize("mode", ["istio", "proxyless"])
async def test_istio_and_proxyless_rebalance_at_once(mode: str, tmp_path: Path) -> None:
    result = await _run(mode, tmp_path)
    steady = result.steady
    assert steady.imbalance["orders"] < 1.3
    assert steady.imbalance["inventory"] < 1.3
    first = result.scale_up.first_traffic_s
    assert first is not None and first < 3.0
    assert result.scale_up.fair_share_s is not None
    if mode == "proxyless":
        assert result.control_plane["xds_pushes"] > 0
    _assert_no_lost_calls(result)
