"""The lab table stays readable in an 80-column terminal: every mode and figure shows."""

from __future__ import annotations

import io

from rich.console import Console

from shop.lab.modes import DEFAULT_MODES
from shop.lab.report import ROWS, print_table
from shop.lab.results import (
    FixedRate,
    LabResults,
    ModeResult,
    PhaseCalls,
    PodCpu,
    ScaleUp,
    SteadyState,
    Timeline,
)

# The widest figures a lab run prints (an overloaded clusterip's), for the width check.
PINNED = FixedRate(
    rate=93.0,
    objective_ms=250.0,
    calls=930,
    dropped=0,
    p50_ms=1002.0,
    p99_ms=1011.0,
    within_objective=0.107,
    goodput_per_s=10.0,
    timeouts=526,
    failures=526,
    status_counts={"OK": 404, "DEADLINE_EXCEEDED": 526},
    pods=(
        PodCpu("orders-0", 0.25, 0.2475, 0.99, 8.1),
        PodCpu("orders-1", 0.25, 0.001, 0.0, 0.0),
        PodCpu("inventory-1", 0.25, 0.1475, 0.04, 0.2),
    ),
)


def _mode(name: str, first_call: float | None) -> ModeResult:
    return ModeResult(
        name=name,
        description="",
        steady=SteadyState(
            calls=1842,
            calls_per_s=184.2,
            p50_ms=85.3,
            p99_ms=215.0,
            shares={
                "orders": {"orders-0": 1.0, "orders-1": 0.0},
                "inventory": {"inventory-0": 0.5, "inventory-1": 0.5},
            },
            imbalance={"inventory": 1.0},
            cpu_s_per_1000_calls=8.97,
            failures=0,
        ),
        scale_up=ScaleUp(
            start=2, end=4, first_traffic_s=first_call, fair_share_s=None, window_s=15.0
        ),
        rollout=PhaseCalls(failures=1, calls=2385),
        scale_down=PhaseCalls(failures=0, calls=3987),
        failures_total=1,
        status_counts={},
        timeline=Timeline(start_unix=0.0, bucket_s=0.5),
        fixed_rate=PINNED,
        retries={"inventory": 12},
    )


def test_every_mode_and_figure_fits_in_80_columns() -> None:
    results = LabResults(
        modes=[_mode(name, 0.2 if i % 2 else None) for i, name in enumerate(DEFAULT_MODES)]
    )
    out = io.StringIO()
    print_table(results, Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for name in DEFAULT_MODES:  # long names wrap at their hyphen
        assert all(part in text for part in name.split("-"))
    for label, _ in ROWS:
        assert label in text
    assert "never" in text and "0.2 s" in text
    assert "100 0" in text and "1 / 2385" in text and "85/215" in text
    # No figure wraps onto a second line: each row holds all five modes' values.
    rows = {" ".join(line.split()[:2]): line for line in text.splitlines() if len(line.split()) > 2}
    assert rows["fixed p50/p99"].count("1002/1011") == len(DEFAULT_MODES)
    assert rows["fixed failed"].count("526 (526)") == len(DEFAULT_MODES)
    assert rows["busiest orders"].count("99%·99%") == len(DEFAULT_MODES)
    assert rows["fixed in"].count("10.7%") == len(DEFAULT_MODES)
    assert rows["retried attempts"].count("12") == len(DEFAULT_MODES)
