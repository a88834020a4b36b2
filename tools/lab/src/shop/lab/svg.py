"""A small kit for line and bar charts as inline SVG text: scales, ticks, axes,
lines, bars, legends and escaping, with the standard library only.

Everything returns SVG markup as strings (lists of lines for groups), so a page can
put charts inline with no JavaScript, fonts or images to fetch. Text is measured
roughly (``CHAR_WIDTH``), which is enough to lay out labels and legends that do not
overlap. All text and attribute values pass through :func:`escape`.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Tableau 10 without its red, which is kept for failures.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
# Dash patterns for series past the palette's end, so no two share a style.
DASHES = ("6 3", "2 2", "8 3 2 3")
AXIS_COLOR = "#888888"
GRID_COLOR = "#e6e6e6"
FONT = 12
SMALL_FONT = 11
LEGEND_ROW = 20
# Dashes of a rule (an event's moment, a limit's level), unlike any series' pattern.
RULE_DASH = "5 4"
# Rough advance of one character of the sans-serif font, per unit of font size.
CHAR_WIDTH = 0.6


def escape(value: object) -> str:
    """Text or attribute value, escaped for HTML and for XML alike."""
    return html.escape(str(value), quote=True)


def coord(value: float) -> str:
    """A coordinate for an SVG attribute."""
    return f"{value:.1f}"


def text_width(text: str, size: int) -> float:
    return len(text) * size * CHAR_WIDTH


def dash_attr(dash: str) -> str:
    return f' stroke-dasharray="{dash}"' if dash else ""


# --- scales and ticks ---------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    """Maps a data interval onto a pixel interval."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        span = self.d1 - self.d0
        return self.r0 + (value - self.d0) / span * (self.r1 - self.r0)


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten giving about ``target_ticks``."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / target_ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def ticks(high: float, target_ticks: int = 5) -> list[float]:
    """Ticks from 0 to at least ``high``, on a nice step; the last one is the top."""
    step = nice_step(high, target_ticks)
    count = max(1, math.ceil(high / step - 1e-9))
    return [i * step for i in range(count + 1)]


def tick_label(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:g}"


# --- series styles ------------------------------------------------------------------


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """``inventory-2`` before ``inventory-10``."""
    parts = re.split(r"(\d+)", name)
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts if p]


def series_styles(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Name -> (color, dash pattern): palette by natural sorted position, dashed past
    its end. The same set of names gives every name the same style in every chart."""
    styles: dict[str, tuple[str, str]] = {}
    for index, name in enumerate(sorted(set(names), key=natural_key)):
        cycle, slot = divmod(index, len(PALETTE))
        styles[name] = (PALETTE[slot], "" if cycle == 0 else DASHES[cycle % len(DASHES)])
    return styles


# --- marks --------------------------------------------------------------------------


def polyline(
    points: Iterable[tuple[float, float]], color: str, dash: str, title: str, data: str = ""
) -> str:
    """A line through ``points`` (pixels); ``data`` is extra attribute text."""
    joined = " ".join(f"{coord(x)},{coord(y)}" for x, y in points)
    return (
        f'<polyline{data} points="{joined}" stroke="{color}"{dash_attr(dash)}>'
        f"<title>{escape(title)}</title></polyline>"
    )


def bar(left: float, right: float, top: float, bottom: float, color: str, title: str) -> str:
    """A bar from ``bottom`` up to ``top``, at least 1.5 px wide so a thin one shows."""
    return (
        f'<rect x="{coord(left)}" y="{coord(top)}" width="{coord(max(right - left, 1.5))}" '
        f'height="{coord(bottom - top)}" stroke="{color}" stroke-width="0.5">'
        f"<title>{escape(title)}</title></rect>"
    )


def path(
    runs: Iterable[Sequence[tuple[float, float]]],
    color: str,
    dash: str,
    title: str,
    data: str = "",
) -> str:
    """One series as runs of points (pixels), with gaps between the runs where it has
    no data: a polyline would join across a gap and draw values nobody measured. A run
    of one point shows as a dot (a zero-length stroke with round caps)."""
    commands: list[str] = []
    for run in runs:
        if not run:
            continue
        (x0, y0), *rest = run
        commands.append(f"M{coord(x0)},{coord(y0)}")
        commands.extend(f"L{coord(x)},{coord(y)}" for x, y in rest)
        if not rest:
            commands.append("h0")
    return (
        f'<path{data} d="{" ".join(commands)}" stroke="{color}" stroke-linecap="round"'
        f"{dash_attr(dash)}><title>{escape(title)}</title></path>"
    )


def horizontal_rule(
    left: float, right: float, y: float, color: str, title: str, data: str = ""
) -> str:
    """A dashed horizontal line marking a level, e.g. a limit."""
    return (
        f'<line{data} x1="{coord(left)}" y1="{coord(y)}" x2="{coord(right)}" y2="{coord(y)}" '
        f'stroke="{color}" stroke-dasharray="{RULE_DASH}" stroke-width="1.2">'
        f"<title>{escape(title)}</title></line>"
    )


def vertical_rule(x: float, top: float, bottom: float, color: str, title: str, data: str) -> str:
    """A dashed vertical line marking a moment."""
    return (
        f'<line{data} x1="{coord(x)}" y1="{coord(top)}" x2="{coord(x)}" y2="{coord(bottom)}" '
        f'stroke="{color}" stroke-dasharray="{RULE_DASH}" stroke-width="1.2">'
        f"<title>{escape(title)}</title></line>"
    )


def text(x: float, y: float, content: str, size: int, extra: str = "") -> str:
    return f'<text x="{coord(x)}" y="{coord(y)}" font-size="{size}"{extra}>{escape(content)}</text>'


# --- axes ---------------------------------------------------------------------------


def vertical_grid(
    x: Linear, x_ticks: Sequence[float], top: float, bottom: float, unit: str = ""
) -> list[str]:
    """The value axis of a chart of horizontal bars: a line per tick from ``top`` down to
    ``bottom`` (the axis colour at 0, grid colour elsewhere) and its label, with ``unit``,
    under it; a group of its own."""
    out = ['<g class="axes">']
    for value in x_ticks:
        px = coord(x(value))
        color = GRID_COLOR if value else AXIS_COLOR
        out.append(f'<line x1="{px}" y1="{top}" x2="{px}" y2="{bottom}" stroke="{color}"/>')
        label = tick_label(value) + unit
        out.append(text(x(value), bottom + 16, label, SMALL_FONT, ' text-anchor="middle"'))
    out.append("</g>")
    return out


@dataclass(frozen=True)
class Axes:
    """Both axes of a plot: scales (their ranges are the plot's edges), ticks, titles."""

    x: Linear
    y: Linear
    x_ticks: Sequence[float]
    y_ticks: Sequence[float]
    x_title: str
    y_title: str
    # False for a panel stacked over another that shares its x-axis: tick marks only,
    # the labels and title once, under the lowest panel.
    x_labels: bool = True

    def svg(self) -> list[str]:
        left, right = self.x.r0, self.x.r1
        bottom, top = self.y.r0, self.y.r1
        out = ['<g class="axes">']
        for value in self.y_ticks:
            py = coord(self.y(value))
            if value:
                out.append(
                    f'<line x1="{coord(left)}" y1="{py}" x2="{coord(right)}" y2="{py}" '
                    f'stroke="{GRID_COLOR}"/>'
                )
            out.append(
                f'<text x="{coord(left - 6)}" y="{py}" dy="4" font-size="{SMALL_FONT}" '
                f'text-anchor="end">{escape(tick_label(value))}</text>'
            )
        for value in self.x_ticks:
            px = coord(self.x(value))
            out.append(
                f'<line x1="{px}" y1="{coord(bottom)}" x2="{px}" y2="{coord(bottom + 4)}" '
                f'stroke="{AXIS_COLOR}"/>'
            )
            if self.x_labels:
                label = tick_label(value)
                middle = ' text-anchor="middle"'
                out.append(text(self.x(value), bottom + 17, label, SMALL_FONT, middle))
        out.append(
            f'<line class="baseline" x1="{coord(left)}" y1="{coord(bottom)}" '
            f'x2="{coord(right)}" y2="{coord(bottom)}" stroke="{AXIS_COLOR}"/>'
        )
        out.append(
            f'<line x1="{coord(left)}" y1="{coord(top)}" x2="{coord(left)}" '
            f'y2="{coord(bottom)}" stroke="{AXIS_COLOR}"/>'
        )
        middle = coord((top + bottom) / 2)
        out.append(
            f'<text x="16" y="{middle}" font-size="{SMALL_FONT}" text-anchor="middle" '
            f'transform="rotate(-90 16 {middle})">{escape(self.y_title)}</text>'
        )
        if self.x_labels:
            out.append(text(right, bottom + 33, self.x_title, SMALL_FONT, ' text-anchor="end"'))
        out.append("</g>")
        return out


# --- legends ------------------------------------------------------------------------

# Swatch kinds besides a dash pattern: a bar swatch, or text only.
BAR_SWATCH = "bar"
NO_SWATCH = "none"


@dataclass(frozen=True)
class LegendEntry:
    label: str
    color: str
    swatch: str  # a dash pattern ("" solid) for a line, BAR_SWATCH or NO_SWATCH


@dataclass(frozen=True)
class Legend:
    entries: Sequence[LegendEntry]
    rows: int
    positions: Sequence[tuple[float, int]]  # x, row

    @classmethod
    def flow(
        cls, entries: Sequence[LegendEntry], start: float, left: float, right: float
    ) -> Legend:
        """Entries from ``start`` on the first row, wrapping to ``left`` past ``right``."""
        x, row = start, 0
        positions: list[tuple[float, int]] = []
        for entry in entries:
            swatch = 0 if entry.swatch == NO_SWATCH else 26
            width = swatch + text_width(entry.label, FONT) + 18
            if x + width > right and x > left:
                x, row = left, row + 1
            positions.append((x, row))
            x += width
        return cls(entries, row + 1, positions)

    def svg(self) -> list[str]:
        out = ['<g class="legend">']
        for entry, (x, row) in zip(self.entries, self.positions, strict=True):
            y = 14 + row * LEGEND_ROW
            color = entry.color
            if entry.swatch == NO_SWATCH:
                out.append(
                    text(x, y, entry.label, FONT, f' font-style="italic" style="fill: {color}"')
                )
                continue
            if entry.swatch == BAR_SWATCH:
                out.append(
                    f'<rect x="{coord(x)}" y="{y - 9}" width="20" height="10" '
                    f'fill="{color}" fill-opacity="0.45" stroke="{color}"/>'
                )
            else:
                out.append(
                    f'<line x1="{coord(x)}" y1="{y - 4}" x2="{coord(x + 20)}" y2="{y - 4}" '
                    f'stroke="{color}" stroke-width="3"{dash_attr(entry.swatch)}/>'
                )
            out.append(text(x + 26, y, entry.label, FONT))
        out.append("</g>")
        return out
