"""The lab's terminal table: one row per mode, the figures a reader compares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _shares(shares: Mapping[str, float]) -> str:
    return " ".join(f"{round(share * 100):d}" for share in shares.values())


def print_table(results: Mapping[str, Any], console: Console) -> None:
    table = Table(title="balancing lab: the same load in every mode", title_justify="left")
    for column, justify in (
        ("mode", "left"),
        ("orders %", "right"),
        ("inventory %", "right"),
        ("imbalance inv", "right"),
        ("calls/s", "right"),
        ("p50 / p99 ms", "right"),
        ("CPU s /1k calls", "right"),
        ("scale-up: first call", "right"),
        ("80% fair share", "right"),
        ("rollout failed", "right"),
        ("scale-down failed", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "mode")  # type: ignore[arg-type]
    for name, mode in results["modes"].items():
        steady = mode["steady"]
        cpu = steady["cpu_s_per_1000_calls"]
        table.add_row(
            name,
            _shares(steady["shares"]["orders"]),
            _shares(steady["shares"]["inventory"]),
            f"{steady['imbalance']['inventory']:.2f}",
            f"{steady['calls_per_s']:.0f}",
            f"{steady['p50_ms']:.0f} / {steady['p99_ms']:.0f}",
            "-" if cpu is None else f"{cpu:.2f}",
            _seconds(mode["scale_up"]["first_traffic_s"]),
            _seconds(mode["scale_up"]["fair_share_s"]),
            f"{mode['rollout']['failures']} / {mode['rollout']['calls']}",
            f"{mode['scale_down']['failures']} / {mode['scale_down']['calls']}",
        )
    console.print(table)
    console.print(
        "shares: % of calls per pod at each hop in steady state; imbalance = busiest pod's "
        "share / mean (1.00 even); scale-up times within the scale-up window, measured to "
        "the timeline's bucket; failed = failed calls / calls during that phase.",
        highlight=False,
    )
