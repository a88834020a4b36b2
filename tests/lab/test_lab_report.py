"""The lab table stays readable in an 80-column terminal: every mode and figure shows."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from shop.lab.modes import MODE_NAMES
from shop.lab.report import ROWS, print_table


def _mode(first_call: float | None) -> dict[str, Any]:
    return {
        "steady": {
            "shares": {"orders": {"orders-0": 1.0, "orders-1": 0.0},
                       "inventory": {"inventory-0": 0.5, "inventory-1": 0.5}},
            "imbalance": {"inventory": 1.0},
            "calls_per_s": 184.2,
            "p50_ms": 85.3,
            "p99_ms": 215.0,
            "cpu_s_per_1000_calls": 8.97,
        },
        "scale_up": {"first_traffic_s": first_call, "fair_share_s": None},
        "rollout": {"failures": 1, "calls": 2385},
        "scale_down": {"failures": 0, "calls": 3987},
    }  # fmt: skip


def test_every_mode_and_figure_fits_in_80_columns() -> None:
    results = {"modes": {name: _mode(0.2 if i % 2 else None) for i, name in enumerate(MODE_NAMES)}}
    out = io.StringIO()
    print_table(results, Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for name in MODE_NAMES:  # long names wrap at their hyphen
        assert all(part in text for part in name.split("-"))
    for label, _ in ROWS:
        assert label in text
    assert "never" in text and "0.2 s" in text
    assert "100 0" in text and "1 / 2385" in text and "85 / 215" in text
