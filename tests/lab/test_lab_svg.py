"""The SVG kit's pieces on their own: round ticks, stable series styles, escaping, and
legends that wrap instead of running off the chart."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shop.lab.svg import (
    NO_SWATCH,
    PALETTE,
    RULE_DASH,
    Axes,
    Legend,
    LegendEntry,
    Linear,
    escape,
    horizontal_rule,
    nice_step,
    path,
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


def test_a_path_leaves_gaps_between_runs_and_dots_a_lone_point() -> None:
    line = ET.fromstring(path([[(0, 10), (5, 20)], [], [(9, 4)]], "#123456", "", "p <1>"))
    assert line.get("d") == "M0.0,10.0 L5.0,20.0 M9.0,4.0 h0"
    assert line.get("stroke-linecap") == "round"  # what makes the lone point's dot show
    assert line.findtext("title") == "p <1>"


def test_a_horizontal_rule_is_dashed_at_one_level() -> None:
    rule = ET.fromstring(horizontal_rule(10, 90, 42.25, "#444", "limit", ' data-limit="1"'))
    assert (rule.get("y1"), rule.get("y2")) == ("42.2", "42.2")
    assert (rule.get("x1"), rule.get("x2")) == ("10.0", "90.0")
    assert rule.get("stroke-dasharray") == RULE_DASH
    assert rule.get("data-limit") == "1"


def test_axes_over_a_shared_x_axis_leave_its_labels_to_the_panel_below() -> None:
    x, y = Linear(0, 10, 50, 550), Linear(0, 1, 200, 20)
    full = Axes(x, y, [0, 5, 10], [0, 1], "seconds", "cores")
    stacked = Axes(x, y, [0, 5, 10], [0, 1], "seconds", "cores", x_labels=False)
    texts = [ET.fromstring("<g>" + "".join(a.svg()) + "</g>").iter("text") for a in (full, stacked)]
    labels = [{t.text for t in found} for found in texts]
    assert {"5", "10", "seconds"} <= labels[0]
    assert labels[1] == {"0", "1", "cores"}  # the y-axis's own, still
