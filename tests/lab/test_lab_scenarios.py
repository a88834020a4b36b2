"""The scenarios' parts that need no cluster: reading attempts from pods' metrics, when
a failing pod stopped getting attempts, the results' JSON, the table, the page, the
modes they add and the command line. ``test_lab_scenario_runs.py`` runs them for real.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from rich.console import Console

from shop.lab.attempts import (
    AttemptCounts,
    AttemptSample,
    last_attempt_s,
    parse_attempts,
    totals,
)
from shop.lab.modes import DEFAULT_MODES, MODE_NAMES, LabCluster, create_mode
from shop.lab.results import FixedRate, PodCpu, SteadyState
from shop.lab.scenario_report import (
    FAILING_ROWS,
    SLOW_ROWS,
    print_scenario_table,
    render_scenario_html,
)
from shop.lab.scenario_results import FailingPodMode, ScenarioResults, SlowPodMode, WaitPoint
from shop.lab.scenarios import (
    SCENARIOS,
    WAIT_AGE,
    WAIT_CHART,
    WAIT_LAB,
    WAIT_RERESOLUTION,
    WAIT_SWEEP,
    WAIT_TTL,
    WAIT_XDS,
    WaitSpec,
    attempt_timeline,
)
from shop.local.addresses import AddressPlan, free_net


def _exposition() -> str:
    """/metrics text as the runtime writes it: its counters' names and labels."""
    registry = CollectorRegistry()
    labels = ("grpc_type", "grpc_service", "grpc_method")
    handled = Counter("grpc_server_handled", "", (*labels, "grpc_code"), registry=registry)
    retried = Counter("grpc_server_retried", "", labels, registry=registry)
    handled.labels("unary", "shop.v1.Inventory", "Reserve", "OK").inc(7)
    handled.labels("unary", "shop.v1.Inventory", "Reserve", "UNAVAILABLE").inc(3)
    handled.labels("unary", "shop.v1.Inventory", "Release", "INTERNAL").inc(2)
    # A business refusal is an answer, not a failure of the pod.
    handled.labels("unary", "shop.v1.Inventory", "Reserve", "FAILED_PRECONDITION").inc(4)
    handled.labels("unary", "grpc.health.v1.Health", "Check", "OK").inc(100)
    retried.labels("unary", "shop.v1.Inventory", "Reserve").inc(5)
    retried.labels("unary", "grpc.health.v1.Health", "Check").inc(9)
    return generate_latest(registry).decode()


def test_attempts_are_read_per_grpc_service() -> None:
    assert parse_attempts(_exposition(), "shop.v1.Inventory") == AttemptCounts(
        answered=16, failed=5, retried=5
    )
    assert parse_attempts(_exposition(), "shop.v1.Orders") == AttemptCounts()


def _sample(unix: float, **answered: int) -> AttemptSample:
    return AttemptSample(
        unix, {pod.replace("_", "-"): AttemptCounts(n, 0, 0) for pod, n in answered.items()}
    )


def test_when_a_pod_stopped_getting_attempts() -> None:
    samples = [
        _sample(100.0, inventory_0=0, inventory_2=0),
        _sample(100.5, inventory_0=10, inventory_2=9),
        _sample(101.0, inventory_0=20, inventory_2=14),
        _sample(101.5, inventory_0=30, inventory_2=14),
        _sample(102.0, inventory_0=40, inventory_2=14),
    ]
    assert last_attempt_s(samples, "inventory-2", start_unix=100.0) == 1.0
    # Still getting attempts at the last reading: the last reading's time.
    assert last_attempt_s(samples, "inventory-0", start_unix=100.0) == 2.0
    assert last_attempt_s(samples[:1], "inventory-2", start_unix=100.0) is None
    assert totals(samples) == {
        "inventory-0": AttemptCounts(40, 0, 0),
        "inventory-2": AttemptCounts(14, 0, 0),
    }
    assert attempt_timeline(samples, 100.0)[:2] == (
        (0.5, {"inventory-0": 10, "inventory-2": 9}),
        (1.0, {"inventory-0": 10, "inventory-2": 5}),
    )


def test_a_pod_restarted_mid_run_counts_from_its_first_reading() -> None:
    samples = [_sample(1.0, inventory_1=50), _sample(2.0, inventory_1=80)]
    assert totals(samples) == {"inventory-1": AttemptCounts(30, 0, 0)}


STEADY = SteadyState(
    calls=1500,
    calls_per_s=150.0,
    p50_ms=60.0,
    p99_ms=370.0,
    shares={
        "orders": {"orders-0": 0.5, "orders-1": 0.5},
        "inventory": {"inventory-0": 0.37, "inventory-1": 0.37, "inventory-2": 0.26},
    },
    imbalance={"inventory": 1.11},
    cpu_s_per_1000_calls=5.0,
    failures=0,
)
FIXED = FixedRate(
    rate=160.0,
    objective_ms=250.0,
    calls=1600,
    dropped=0,
    p50_ms=5.0,
    p99_ms=165.0,
    within_objective=0.996,
    goodput_per_s=159.0,
    timeouts=0,
    failures=0,
    status_counts={"OK": 1600},
    pods=(PodCpu("inventory-2", 0.0625, 0.05, 0.46, 1.2),),
)
SLOW = SlowPodMode("headless-wrr", "wrr <&>", "inventory-2", 0.0625, 0.25, STEADY, FIXED)
FAILING = FailingPodMode(
    name="headless-outlier",
    description="outlier",
    failing_pod="inventory-2",
    duration_s=15.0,
    calls=4673,
    calls_per_s=311.5,
    p99_ms=136.0,
    failures=15,
    status_counts={"OK": 4658, "UNAVAILABLE": 15},
    attempts={
        "inventory-0": AttemptCounts(2328, 0, 36),
        "inventory-1": AttemptCounts(2341, 0, 44),
        "inventory-2": AttemptCounts(139, 139, 39),
    },
    stopped_after_s=1.3,
    ejected=True,
    attempt_timeline=((0.5, {"inventory-2": 100}), (1.0, {"inventory-2": 39})),
    caller_timeline=((0.0, 150, 10), (0.5, 160, 5)),
)


def test_records_read_back_from_their_json() -> None:
    assert SLOW.slow_share == 0.26 and SLOW.fair_share == pytest.approx(1 / 3)
    assert FAILING.failing_share == pytest.approx(139 / (2328 + 2341 + 139))
    assert FAILING.retried == {"inventory-0": 36, "inventory-1": 44, "inventory-2": 39}
    for scenario, mode in (("slow-pod", SLOW), ("failing-pod", FAILING)):
        results = ScenarioResults(scenario, (mode,), {"steady_s": 10.0})
        assert ScenarioResults.from_json(json.loads(json.dumps(results.to_json()))) == results


def test_table_has_every_row_and_mode() -> None:
    for scenario, mode, rows in (
        ("slow-pod", SLOW, SLOW_ROWS),
        ("failing-pod", FAILING, FAILING_ROWS),
    ):
        out = io.StringIO()
        print_scenario_table(ScenarioResults(scenario, (mode,), {}), Console(file=out, width=100))
        text = out.getvalue()
        for label, _ in rows:
            assert label in text
    out = io.StringIO()
    print_scenario_table(
        ScenarioResults("failing-pod", (FAILING,), {}), Console(file=out, width=100)
    )
    assert "0.3%" in out.getvalue() and "1.3 s" in out.getvalue() and "80/39" in out.getvalue()


def test_six_modes_fit_80_columns() -> None:
    names = SCENARIOS["failing-pod"].modes
    modes = tuple(dataclasses.replace(FAILING, name=name) for name in names)
    out = io.StringIO()
    print_scenario_table(
        ScenarioResults("failing-pod", modes, {}), Console(file=out, width=80, color_system=None)
    )
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing cut short
    for label, _ in FAILING_ROWS:
        assert label in text


def test_page_draws_the_scenario_chart() -> None:
    slow = render_scenario_html(ScenarioResults("slow-pod", (SLOW,), {}))
    assert 'data-chart="slow-pod"' in slow and 'data-mode="headless-wrr"' in slow
    assert "wrr &lt;&amp;&gt;" in slow and "<&>" not in slow  # descriptions are escaped
    assert 'data-rule="even spread"' in slow and 'data-rule="by CPU limit"' in slow
    failing = render_scenario_html(ScenarioResults("failing-pod", (FAILING,), {}))
    assert 'data-chart="failing-pod"' in failing and "<script" not in failing
    # 100 attempts in the first 0.5 s: 200/s, drawn from the timeline.
    assert "attempts/s" in failing


def test_scenario_modes_are_registered_but_not_run_by_default() -> None:
    for scenario in SCENARIOS.values():
        assert set(scenario.modes) <= set(MODE_NAMES)
    assert "headless-wrr" not in DEFAULT_MODES and "headless-outlier" not in DEFAULT_MODES
    assert set(DEFAULT_MODES) <= set(MODE_NAMES)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("headless-wrr", {"SHOP_LB_POLICY": "weighted_round_robin", "SHOP_WRR_BLACKOUT_S": "0.0"}),
        (
            "headless-outlier",
            {"SHOP_LB_POLICY": "round_robin", "SHOP_OUTLIER_DETECTION": "true",
             "SHOP_OUTLIER_MIN_HOSTS": "2"},
        ),
    ],
)  # fmt: skip
async def test_scenario_modes_set_their_policy(
    mode: str, expected: dict[str, str], tmp_path: Path
) -> None:
    created = create_mode(mode, LabCluster(AddressPlan(net=free_net()), tmp_path))
    try:
        env = await created.start()
    finally:
        await created.close()
    assert expected.items() <= env.common.items()
    # Still the chart's headless mode underneath: DNS targets and a max connection age.
    assert env.common["SHOP_INVENTORY_TARGET"].startswith("dns://")
    assert env.per_service["inventory"]["SHOP_MAX_CONNECTION_AGE_S"] == "2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "slow-pod", "--no-limits"], "argument --scenario: slow-pod needs pod"),
        (["--scenario", "failing-pod", "--inventory", "1"], "argument --inventory: a scenario"),
        (["--scenario", "fast-pod"], "argument --scenario: invalid choice"),
    ],
)
def test_bad_scenario_flags_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shop.cli.main", "lab", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


# --- new-pod-wait -----------------------------------------------------------------------


def test_sweep_points_change_one_part_at_a_time() -> None:
    names = [spec.name for spec in WAIT_SWEEP]
    assert len(set(names)) == len(names)  # the JSON's keys
    lab = next(spec for spec in WAIT_SWEEP if spec.varied == WAIT_LAB)
    assert (lab.max_age_s, lab.grace_s, lab.reresolution_s, lab.ttl_s) == (2, 1, 1, 1)
    for spec in WAIT_SWEEP:
        if spec.varied in (WAIT_AGE, WAIT_RERESOLUTION, WAIT_TTL):
            same = [
                getattr(spec, field) == getattr(lab, field)
                for field in ("max_age_s", "grace_s", "reresolution_s", "ttl_s")
            ]
            assert same.count(False) == 1, spec
    chart = next(spec for spec in WAIT_SWEEP if spec.varied == WAIT_CHART)
    assert (chart.max_age_s, chart.grace_s, chart.reresolution_s, chart.ttl_s) == (30, 5, 5, 5)
    # Watched past every wait the settings allow.
    assert chart.window_s >= 30 + 5 + 5


def test_a_sweep_point_is_environment_for_every_pod() -> None:
    spec = WaitSpec("headless", WAIT_AGE, 4.0, 1.0, 1.0, 1)
    env = spec.pod_env({"gateway": 1, "orders": 2, "inventory": 2})
    # The added pod (inventory-2) too; the gateway is a client only.
    assert env[("inventory", 2)] == {
        "SHOP_DNS_MIN_RERESOLUTION_S": "1",
        "SHOP_MAX_CONNECTION_AGE_S": "4",
        "SHOP_MAX_CONNECTION_AGE_GRACE_S": "1",
    }
    assert env[("gateway", 0)] == {"SHOP_DNS_MIN_RERESOLUTION_S": "1"}
    assert spec.name == "headless age 4 s"
    assert WaitSpec("istio", WAIT_XDS).pod_env({"inventory": 2}) == {}


POINTS = (
    WaitPoint("headless", "headless", WAIT_LAB, 2.0, 1.0, 1.0, 1.0, 0.75, 2.25, 15.0),
    WaitPoint("headless age 8 s", "headless", WAIT_AGE, 8.0, 1.0, 1.0, 1.0,
              1.25, 8.75, 22.0),
    WaitPoint("headless (chart defaults)", "headless", WAIT_CHART, 30.0, 5.0, 5.0, 5.0,
              None, None, 52.0),
    WaitPoint("istio", "istio", WAIT_XDS, None, None, None, None, 0.25, 0.75, 15.0),
)  # fmt: skip


def test_sweep_results_table_and_chart() -> None:
    results = ScenarioResults("new-pod-wait", POINTS, {})
    assert ScenarioResults.from_json(json.loads(json.dumps(results.to_json()))) == results
    out = io.StringIO()
    print_scenario_table(results, Console(file=out, width=120))
    text = out.getvalue()
    assert "headless age 8 s" in text and "8.8 s" in text and "never" in text
    page = render_scenario_html(results)
    assert 'data-chart="new-pod-wait"' in page
    # The age line runs through the lab's point (2 s) and the 8 s one.
    assert 'data-series="max connection age"' in page
    assert 'data-rule="istio"' in page
    # A point that never got its share draws no rule.
    assert 'data-rule="headless (chart defaults)"' not in page
