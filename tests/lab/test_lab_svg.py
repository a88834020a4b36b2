"""The SVG kit's pieces on their own: round ticks, stable series styles, escaping, and
legends that wrap instead of running off the chart."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shop.lab.svg import (
    NO_SWATCH,
    PALETTE,
    Legend,
    LegendEntry,
    escape,
    nice_step,
    series_styles,
    ticks,
)


@pytest.mark.parametrize(
    ("high", "expected"),
    [(60, [0, 20, 40, 60]), (373, [0, 100, 200, 300, 400]), (1.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0])],
)
def test_ticks_are_round_and_cover_the_peak(high: float, expected: list[float]) -> None:
    assert ticks(high) == pytest.approx(expected)
    assert nice_step(0) == 1.0


def test_series_keep_their_style_whatever_the_order_given() -> None:
    names = [f"inventory-{i}" for i in (10, 2, 1, 0)]
    styles = series_styles(names)
    assert styles == series_styles(reversed(names))
    # Natural order: inventory-2 before inventory-10.
    assert [styles[f"inventory-{i}"][0] for i in (0, 1, 2)] == list(PALETTE[:3])
    assert styles["inventory-10"][0] == PALETTE[3]
    many = series_styles(f"p-{i}" for i in range(len(PALETTE) + 1))
    assert many[f"p-{len(PALETTE)}"] == (PALETTE[0], "2 2")  # past the palette: dashed


def test_escape_covers_markup_and_quotes() -> None:
    assert escape('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"


def test_a_legend_wraps_onto_a_new_row_at_the_right_edge() -> None:
    entries = [LegendEntry(f"pod-{i}", "#000000", "") for i in range(12)]
    legend = Legend.flow(entries, start=300, left=60, right=500)
    assert legend.rows > 1
    assert all(60 <= x <= 500 for x, _ in legend.positions)
    assert legend.positions[0] == (300.0, 0)
    text_only = Legend.flow([LegendEntry("+1 <quiet>", "#777", NO_SWATCH)], 0, 0, 500)
    svg = ET.fromstring("<svg>" + "".join(text_only.svg()) + "</svg>")
    assert [t.text for t in svg.iter("text")] == ["+1 <quiet>"]
