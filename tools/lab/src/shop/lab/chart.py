"""The balancing lab's results as one self-contained HTML page: a table and charts.

``shop lab`` runs one workload in each balancing mode and records, per time bucket,
the calls every pod served. The interesting part is *when* things happen: how long a
new pod waits for its first call after a scale-up, which pods go quiet in a rollout,
whether calls fail while pods go away. A table of steady-state numbers cannot show
that; a line per pod over time, with the scale and restart events marked, does.

The page is one file with inline CSS and inline SVG, built here with the standard
library only: no server to run, no JavaScript (neither a charting library nor a CDN
link), no fonts or images fetched from anywhere. It opens from disk in any browser,
offline, looks the same in a year, and can be attached to an issue or a review as is.

Every chart of a hop shares one x- and one y-scale with the same hop's charts in
the other modes, and a pod keeps its color in every chart (a fixed palette indexed
by the pod's position among all pod names of the hop, sorted), so the modes compare
at a glance, as small multiples. Input is the lab's results JSON (see
``shop.lab.runner``); all text from it is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shop.lab.analysis import Event

TITLE = "shop lab: gRPC load balancing, mode by mode"
LEDE = (
    "The same workload in each balancing mode: how evenly calls spread over the pods, "
    "and how fast a new pod gets traffic after a scale-up, through a rollout and a "
    "scale-down."
)

# The hop the lab scales up, rolls out and scales down.
SCALED_HOP = "inventory"
# Hops charted per mode, and each chart's plot height in SVG units.
HOPS: tuple[tuple[str, int], ...] = (("inventory", 220), ("orders", 150))
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
FAILURE_COLOR = "#d62728"
EVENT_COLOR = "#555555"
AXIS_COLOR = "#888888"
GRID_COLOR = "#e6e6e6"
MUTED_COLOR = "#777777"

WIDTH = 1040
MARGIN_LEFT = 64
MARGIN_RIGHT = 20
MARGIN_BOTTOM = 38
LEGEND_ROW = 20
EVENT_ROW = 15
FONT = 12
SMALL_FONT = 11
TIMES = "\u00d7"  # the multiplication sign, as in "restart x3"
# Rough advance of one character of the sans-serif font, per unit of font size.
CHAR_WIDTH = 0.6

CSS = """
body { margin: 0; background: #fafafa; color: #222;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 2px; }
.lede { margin: 0 0 12px; color: #444; }
.settings { margin: 0 0 16px; color: #666; font-size: 12px; }
.settings code { background: #eee; padding: 1px 4px; border-radius: 3px; margin-right: 4px;
  display: inline-block; margin-bottom: 3px; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
th, td { padding: 6px 8px; border-bottom: 1px solid #e3e3e3; text-align: right;
  white-space: nowrap; }
th { background: #f0f0f0; font-weight: 600; vertical-align: bottom; white-space: normal; }
th:first-child, td:first-child { text-align: left; }
td:first-child a { color: #1f4e8c; font-weight: 600; text-decoration: none; }
td.bad { color: #c0392b; font-weight: 600; }
td.never { color: #c0392b; }
.notes { color: #666; font-size: 12px; margin: 6px 0 24px; }
section.mode { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px;
  padding: 14px 16px 8px; margin: 0 0 18px; }
.description { margin: 0 0 4px; color: #444; }
.facts { margin: 0 0 8px; color: #555; font-size: 13px; }
.facts b { color: #222; font-weight: 600; }
figure { margin: 0 0 6px; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
  sans-serif; fill: #333; }
"""


def _e(value: object) -> str:
    """Text or attribute value, escaped for HTML and for XML alike."""
    return html.escape(str(value), quote=True)


def _n(value: float) -> str:
    """A coordinate for an SVG attribute."""
    return f"{value:.1f}"


# --- input ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    t: float
    calls: int
    failures: int
    per_hop: Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    steady: Mapping[str, Any]
    scale_up: Mapping[str, Any]
    rollout: Mapping[str, Any]
    scale_down: Mapping[str, Any]
    bucket_s: float
    buckets: Sequence[Bucket]
    events: Sequence[Event]

    def pods(self, hop: str) -> set[str]:
        """Pods of a hop: any that served a call, and any the steady shares list."""
        pods = set(self.steady.get("shares", {}).get(hop, {}))
        for bucket in self.buckets:
            pods.update(bucket.per_hop.get(hop, {}))
        return pods

    def end_s(self) -> float:
        last = self.buckets[-1].t + self.bucket_s if self.buckets else 0.0
        return max([last, *(event.t for event in self.events)])


def _bucket(raw: Mapping[str, Any]) -> Bucket:
    return Bucket(
        t=float(raw["t"]),
        calls=int(raw["calls"]),
        failures=int(raw["failures"]),
        per_hop=raw.get("per_hop", {}),
    )


def _mode(name: str, raw: Mapping[str, Any]) -> Mode:
    timeline = raw["timeline"]
    return Mode(
        name=name,
        description=str(raw.get("description", "")),
        steady=raw["steady"],
        scale_up=raw["scale_up"],
        rollout=raw["rollout"],
        scale_down=raw["scale_down"],
        bucket_s=float(timeline["bucket_s"]),
        buckets=[_bucket(b) for b in timeline["buckets"]],
        events=sorted(
            (
                Event(float(e["t"]), str(e["kind"]), str(e.get("detail", "")))
                for e in raw.get("events", [])
            ),
            key=lambda e: e.t,
        ),
    )


def parse_modes(results: Mapping[str, Any]) -> list[Mode]:
    """The modes of a results dict, in the order the lab ran them."""
    return [_mode(name, raw) for name, raw in results["modes"].items()]


# --- scales, colors, ticks --------------------------------------------------------


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


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """``inventory-2`` before ``inventory-10``."""
    parts = re.split(r"(\d+)", name)
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts if p]


def pod_styles(pods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Pod -> (color, dash pattern): palette by sorted position, dashed past its end."""
    styles: dict[str, tuple[str, str]] = {}
    for index, pod in enumerate(sorted(set(pods), key=_natural_key)):
        cycle, slot = divmod(index, len(PALETTE))
        styles[pod] = (PALETTE[slot], "" if cycle == 0 else ("6 3", "2 2", "8 3 2 3")[cycle % 3])
    return styles


def _rate(count: int, bucket_s: float) -> float:
    return count / bucket_s if bucket_s > 0 else 0.0


def peak_rate(modes: Sequence[Mode], hop: str, failures: bool) -> float:
    """The highest per-pod calls/s of a hop over all modes (and failures/s if charted)."""
    peak = 0.0
    for mode in modes:
        for bucket in mode.buckets:
            rates = [_rate(n, mode.bucket_s) for n in bucket.per_hop.get(hop, {}).values()]
            if failures:
                rates.append(_rate(bucket.failures, mode.bucket_s))
            peak = max([peak, *(r for r in rates if math.isfinite(r))])
    return peak


@dataclass(frozen=True)
class Frame:
    """What all charts of one hop share: the hop, scales' domains, ticks and colors."""

    hop: str
    plot_height: int
    x_end: float
    y_ticks: Sequence[float]
    x_ticks: Sequence[float]
    styles: Mapping[str, tuple[str, str]]
    show_failures: bool


def frame_for(modes: Sequence[Mode], hop: str, plot_height: int, show_failures: bool) -> Frame:
    x_end = max([1.0, *(mode.end_s() for mode in modes)])
    pods = [pod for mode in modes for pod in mode.pods(hop)]
    return Frame(
        hop=hop,
        plot_height=plot_height,
        x_end=x_end,
        y_ticks=ticks(max(peak_rate(modes, hop, show_failures), 1.0)),
        x_ticks=[t for t in ticks(x_end, 10) if t <= x_end + 1e-9],
        styles=pod_styles(pods),
        show_failures=show_failures,
    )


# --- one chart --------------------------------------------------------------------


def _text_width(text: str, size: int) -> float:
    return len(text) * size * CHAR_WIDTH


@dataclass(frozen=True)
class Marker:
    """Events of one kind close enough in time to share one label ("restart" and a count)."""

    events: Sequence[Event]

    @property
    def label(self) -> str:
        kind = self.events[0].kind
        return kind if len(self.events) == 1 else f"{kind} {TIMES}{len(self.events)}"

    def span(self, x: Linear) -> tuple[float, float, str]:
        """Start, end and text-anchor of the label: right of the first line if it fits."""
        px, width = x(self.events[0].t), _text_width(self.label, SMALL_FONT)
        if px + 3 + width <= WIDTH:
            return px + 3, px + 3 + width, "start"
        return px - 3 - width, px - 3, "end"


def markers(events: Sequence[Event], x: Linear) -> list[Marker]:
    """Events (sorted by time) grouped: a run of one kind whose labels would overlap."""
    groups: list[list[Event]] = []
    for event in events:
        group = groups[-1] if groups else None
        if group and group[0].kind == event.kind:
            first_x = x(group[0].t)
            if x(event.t) - first_x < _text_width(f"{event.kind} {TIMES}00", SMALL_FONT) + 6:
                group.append(event)
                continue
        groups.append([event])
    return [Marker(group) for group in groups]


def _marker_rows(found: Sequence[Marker], x: Linear) -> list[int]:
    """A label row per marker, so that labels close in time do not overlap."""
    row_ends: list[float] = []
    rows: list[int] = []
    for marker in found:
        start, end, _ = marker.span(x)
        row = next((i for i, used in enumerate(row_ends) if used <= start), len(row_ends))
        if row == len(row_ends):
            row_ends.append(0.0)
        row_ends[row] = end + 6
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Legend:
    # label, color, dash pattern ("bar": a bar swatch; "none": text only)
    entries: Sequence[tuple[str, str, str]]
    rows: int
    positions: Sequence[tuple[float, int]]  # x, row


def _legend(title: str, entries: Sequence[tuple[str, str, str]]) -> Legend:
    """Entries flow after the chart title and wrap onto more rows when needed."""
    x = MARGIN_LEFT + _text_width(title, FONT + 1) + 24
    row = 0
    positions: list[tuple[float, int]] = []
    for label, _, dash in entries:
        width = (0 if dash == "none" else 26) + _text_width(label, FONT) + 18
        if x + width > WIDTH - MARGIN_RIGHT and x > MARGIN_LEFT:
            x, row = MARGIN_LEFT, row + 1
        positions.append((x, row))
        x += width
    return Legend(entries, row + 1, positions)


def _legend_svg(legend: Legend) -> list[str]:
    out = ['<g class="legend">']
    for (label, color, dash), (x, row) in zip(legend.entries, legend.positions, strict=True):
        y = 14 + row * LEGEND_ROW
        if dash == "none":
            out.append(
                f'<text x="{_n(x)}" y="{y}" font-size="{FONT}" font-style="italic" '
                f'style="fill: {color}">{_e(label)}</text>'
            )
            continue
        if dash == "bar":
            out.append(
                f'<rect x="{_n(x)}" y="{y - 9}" width="20" height="10" '
                f'fill="{color}" fill-opacity="0.45" stroke="{color}"/>'
            )
        else:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(
                f'<line x1="{_n(x)}" y1="{y - 4}" x2="{_n(x + 20)}" y2="{y - 4}" '
                f'stroke="{color}" stroke-width="3"{dash_attr}/>'
            )
        out.append(f'<text x="{_n(x + 26)}" y="{y}" font-size="{FONT}">{_e(label)}</text>')
    out.append("</g>")
    return out


def _axes_svg(frame: Frame, x: Linear, y: Linear, top: float, bottom: float) -> list[str]:
    left, right = x.r0, x.r1
    out = ['<g class="axes">']
    for value in frame.y_ticks:
        py = _n(y(value))
        if value:
            out.append(
                f'<line x1="{_n(left)}" y1="{py}" x2="{_n(right)}" y2="{py}" '
                f'stroke="{GRID_COLOR}"/>'
            )
        out.append(
            f'<text x="{_n(left - 6)}" y="{py}" dy="4" font-size="{SMALL_FONT}" '
            f'text-anchor="end">{_e(tick_label(value))}</text>'
        )
    for value in frame.x_ticks:
        px = _n(x(value))
        out.append(
            f'<line x1="{px}" y1="{_n(bottom)}" x2="{px}" y2="{_n(bottom + 4)}" '
            f'stroke="{AXIS_COLOR}"/>'
        )
        out.append(
            f'<text x="{px}" y="{_n(bottom + 17)}" font-size="{SMALL_FONT}" '
            f'text-anchor="middle">{_e(tick_label(value))}</text>'
        )
    out.append(
        f'<line class="baseline" x1="{_n(left)}" y1="{_n(bottom)}" x2="{_n(right)}" '
        f'y2="{_n(bottom)}" stroke="{AXIS_COLOR}"/>'
    )
    out.append(
        f'<line x1="{_n(left)}" y1="{_n(top)}" x2="{_n(left)}" y2="{_n(bottom)}" '
        f'stroke="{AXIS_COLOR}"/>'
    )
    middle = (top + bottom) / 2
    out.append(
        f'<text x="16" y="{_n(middle)}" font-size="{SMALL_FONT}" text-anchor="middle" '
        f'transform="rotate(-90 16 {_n(middle)})">calls/s per pod</text>'
    )
    out.append(
        f'<text x="{_n(right)}" y="{_n(bottom + 33)}" font-size="{SMALL_FONT}" '
        f'text-anchor="end">seconds since the start of the run</text>'
    )
    out.append("</g>")
    return out


def pod_points(mode: Mode, hop: str, pod: str) -> list[tuple[float, float]]:
    """(bucket middle, calls/s) of a pod; a bucket without the pod counts as 0 calls."""
    half = mode.bucket_s / 2
    return [
        (b.t + half, _rate(b.per_hop.get(hop, {}).get(pod, 0), mode.bucket_s)) for b in mode.buckets
    ]


def _series_svg(mode: Mode, frame: Frame, x: Linear, y: Linear) -> list[str]:
    out = ['<g class="series" fill="none" stroke-width="2" stroke-linejoin="round">']
    for pod in sorted(mode.pods(frame.hop), key=_natural_key):
        color, dash = frame.styles[pod]
        points = " ".join(f"{_n(x(t))},{_n(y(r))}" for t, r in pod_points(mode, frame.hop, pod))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<polyline data-pod="{_e(pod)}" points="{points}" stroke="{color}"{dash_attr}>'
            f"<title>{_e(pod)}</title></polyline>"
        )
    out.append("</g>")
    return out


def _failures_svg(mode: Mode, x: Linear, y: Linear) -> list[str]:
    out = [f'<g class="failures" fill="{FAILURE_COLOR}" fill-opacity="0.45">']
    for bucket in mode.buckets:
        if bucket.failures <= 0:
            continue
        rate = _rate(bucket.failures, mode.bucket_s)
        left, right = x(bucket.t), x(bucket.t + mode.bucket_s)
        top = y(rate)
        out.append(
            f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(max(right - left, 1.5))}" '
            f'height="{_n(y.r0 - top)}" stroke="{FAILURE_COLOR}" stroke-width="0.5">'
            f"<title>{_e(f'{bucket.failures:,} failed at {bucket.t:g} s')}</title></rect>"
        )
    out.append("</g>")
    return out


def _event_line(event: Event, px: float, y_top: float, bottom: float) -> str:
    tooltip = f"{event.kind} at {event.t:g} s: {event.detail}" if event.detail else event.kind
    return (
        f'<line data-t="{event.t:g}" x1="{_n(px)}" y1="{_n(y_top)}" x2="{_n(px)}" '
        f'y2="{_n(bottom)}" stroke="{EVENT_COLOR}" stroke-dasharray="5 4" stroke-width="1.2">'
        f"<title>{_e(tooltip)}</title></line>"
    )


def _events_svg(events: Sequence[Event], x: Linear, top: float, bottom: float) -> list[str]:
    out = ['<g class="events">']
    found = markers(events, x)
    for marker, row in zip(found, _marker_rows(found, x), strict=True):
        start, end, anchor = marker.span(x)
        label_y = top - 6 - row * EVENT_ROW
        out.append(f'<g class="event" data-kind="{_e(marker.events[0].kind)}">')
        out.extend(_event_line(e, x(e.t), label_y + 3, bottom) for e in marker.events)
        out.append(
            f'<text x="{_n(start if anchor == "start" else end)}" y="{_n(label_y)}" '
            f'font-size="{SMALL_FONT}" text-anchor="{anchor}" font-style="italic">'
            f"{_e(marker.label)}</text></g>"
        )
    out.append("</g>")
    return out


def _silent_pods(mode: Mode, hop: str) -> int:
    """Pods the scale-up asked for that never show up in the data (they got no call)."""
    if hop != SCALED_HOP or not mode.buckets:
        return 0
    return max(0, int(mode.scale_up["to"]) - len(mode.pods(hop)))


def chart_svg(mode: Mode, frame: Frame) -> str:
    """One mode's calls/s per pod on one hop, on the hop's shared scales."""
    title = f"{frame.hop}: calls/s per pod"
    failures = frame.show_failures and any(b.failures for b in mode.buckets)
    entries = [(pod, *frame.styles[pod]) for pod in sorted(mode.pods(frame.hop), key=_natural_key)]
    if failures:
        entries.append(("failures/s (all calls)", FAILURE_COLOR, "bar"))
    silent = _silent_pods(mode, frame.hop)
    if silent:
        entries.append((f"+{silent} scaled-up pod(s) with no calls", MUTED_COLOR, "none"))
    legend = _legend(title, entries)
    x_probe = Linear(0.0, frame.x_end, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    event_rows = max(_marker_rows(markers(mode.events, x_probe), x_probe), default=-1) + 1
    top = legend.rows * LEGEND_ROW + event_rows * EVENT_ROW + 14
    bottom = top + frame.plot_height
    height = bottom + MARGIN_BOTTOM
    x = x_probe
    y = Linear(0.0, frame.y_ticks[-1], bottom, top)
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" data-mode="{_e(mode.name)}" data-hop="{_e(frame.hop)}">',
        f"<title>{_e(f'{mode.name}: {title}')}</title>",
        f'<text x="{MARGIN_LEFT}" y="14" font-size="{FONT + 1}" font-weight="600">'
        f"{_e(title)}</text>",
        *_legend_svg(legend),
        *_axes_svg(frame, x, y, top, bottom),
        *(_failures_svg(mode, x, y) if failures else []),
        *_series_svg(mode, frame, x, y),
        *_events_svg(mode.events, x, top, bottom),
    ]
    if not mode.buckets:
        parts.append(
            f'<text x="{_n((x.r0 + x.r1) / 2)}" y="{_n((top + bottom) / 2)}" '
            f'font-size="{FONT}" text-anchor="middle">no timeline recorded</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


# --- the page ---------------------------------------------------------------------


def _num(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    return f"{float(value):,.{digits}f}"


def _seconds(value: Any) -> tuple[str, str]:
    """Cell text and class for a clock: "never" when the event did not happen."""
    if value is None:
        return "never", "never"
    return f"{float(value):.1f} s", ""


def _failed_of(phase: Mapping[str, Any]) -> tuple[str, str]:
    failures, calls = int(phase["failures"]), int(phase["calls"])
    return f"{failures:,} / {calls:,}", "bad" if failures else ""


SUMMARY_COLUMNS = (
    "mode",
    "steady calls/s",
    "p50 ms",
    "p99 ms",
    "inventory imbalance",
    "CPU s / 1000 calls",
    "scale-up: first call on a new pod",
    "scale-up: 80% fair share",
    "rollout failed / calls",
    "scale-down failed / calls",
)


def _summary_cells(index: int, mode: Mode) -> list[tuple[str, str, str]]:
    """(html, class, tooltip) per column of one mode's row."""
    steady, scale_up = mode.steady, mode.scale_up
    scaled = f"inventory {scale_up['from']} → {scale_up['to']} pods, "
    window = f"watched for {float(scale_up['window_s']):g} s"
    first, first_class = _seconds(scale_up["first_traffic_s"])
    fair, fair_class = _seconds(scale_up["fair_share_s"])
    rollout, rollout_class = _failed_of(mode.rollout)
    down, down_class = _failed_of(mode.scale_down)
    return [
        (f'<a href="#mode-{index}">{_e(mode.name)}</a>', "", mode.description),
        (_num(steady["calls_per_s"], 0), "", ""),
        (_num(steady["p50_ms"], 2), "", ""),
        (_num(steady["p99_ms"], 2), "", ""),
        (_num(steady["imbalance"]["inventory"], 2), "", "busiest pod's share / mean share"),
        (_num(steady["cpu_s_per_1000_calls"], 2), "", ""),
        (_e(first), first_class, scaled + window),
        (_e(fair), fair_class, scaled + window),
        (_e(rollout), rollout_class, ""),
        (_e(down), down_class, ""),
    ]


def _cell(content: str, css_class: str, tooltip: str) -> str:
    attrs = f' class="{css_class}"' if css_class else ""
    attrs += f' title="{_e(tooltip)}"' if tooltip else ""
    return f"<td{attrs}>{content}</td>"


def summary_table(modes: Sequence[Mode]) -> str:
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in SUMMARY_COLUMNS)
    rows = [
        "<tr>" + "".join(_cell(*cell) for cell in _summary_cells(i, mode)) + "</tr>"
        for i, mode in enumerate(modes)
    ]
    return (
        f'<table class="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


NOTES = (
    "Steady: the balanced phase before any scaling. Imbalance: the busiest inventory "
    "pod's share of calls / the mean share (1.00 is even). Scale-up: seconds from the "
    "scale-up until a new pod served its first call, and until the new pods got 80% of "
    "a fair share; never: not within the window watched. Rollout and scale-down: calls "
    "that failed while pods were restarted or removed, of all calls in that phase."
)


def _settings(settings: Mapping[str, Any]) -> str:
    if not settings:
        return ""
    items = "".join(
        f"<code>{_e(key)}={_e(json.dumps(value, sort_keys=True, default=str))}</code>"
        for key, value in settings.items()
    )
    return f'<p class="settings">Settings: {items}</p>'


def _facts(mode: Mode) -> str:
    steady, scale_up = mode.steady, mode.scale_up
    first, _ = _seconds(scale_up["first_traffic_s"])
    fair, _ = _seconds(scale_up["fair_share_s"])
    facts = (
        f"<b>steady</b> {_num(steady['calls_per_s'], 0)} calls/s, "
        f"p99 {_num(steady['p99_ms'], 2)} ms, {int(steady['failures']):,} failed · "
        f"<b>scale-up {_e(scale_up['from'])} → {_e(scale_up['to'])}</b> "
        f"first call {_e(first)}, 80% fair share {_e(fair)} · "
        f"<b>rollout</b> {_e(_failed_of(mode.rollout)[0])} failed · "
        f"<b>scale-down</b> {_e(_failed_of(mode.scale_down)[0])} failed"
    )
    return f'<p class="facts">{facts}</p>'


def mode_section(index: int, mode: Mode, frames: Sequence[Frame]) -> str:
    charts = "\n".join(f"<figure>{chart_svg(mode, frame)}</figure>" for frame in frames)
    description = f'<p class="description">{_e(mode.description)}</p>' if mode.description else ""
    return (
        f'<section class="mode" id="mode-{index}">'
        f"<h2>{_e(mode.name)}</h2>{description}{_facts(mode)}\n{charts}</section>"
    )


def render_html(results: Mapping[str, Any]) -> str:
    """The whole page for a lab results dict: summary table, then charts per mode."""
    modes = parse_modes(results)
    frames = [
        frame_for(modes, hop, height, show_failures=(i == 0))
        for i, (hop, height) in enumerate(HOPS)
    ]
    sections = "\n".join(mode_section(i, mode, frames) for i, mode in enumerate(modes))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(TITLE)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f'<h1>{_e(TITLE)}</h1>\n<p class="lede">{_e(LEDE)}</p>\n'
        f"{_settings(results.get('settings') or {})}\n"
        f"{summary_table(modes)}\n"
        f'<p class="notes">{_e(NOTES)}</p>\n'
        f"{sections}\n</main>\n</body>\n</html>\n"
    )


def write_chart(results: Mapping[str, Any], path: Path) -> Path:
    """Write the page to ``path`` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")
    return path
