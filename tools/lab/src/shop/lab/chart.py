"""One lab chart: a mode's calls per second per pod at one hop, over the events run,
with the scale-up, each restart and the scale-down marked and failures as bars.

A table of steady-state numbers cannot show *when* things happen (how long a new pod
waits for its first call, which pods go quiet in a rollout, whether calls fail while
pods go away); a line per pod over time with the events marked does.

Every chart of a hop shares one :class:`Frame` with the same hop's charts in the
other modes: one x- and one y-scale, and a pod keeps its color in every chart, so the
modes compare at a glance, as small multiples. Drawn with ``shop.lab.svg``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shop.lab import svg
from shop.lab.results import CpuSample, Event, ModeResult, service_of
from shop.lab.svg import Legend, LegendEntry, Linear

# The hop the lab scales up, rolls out and scales down.
SCALED_HOP = "inventory"
FAILURE_COLOR = "#d62728"
EVENT_COLOR = "#555555"
MUTED_COLOR = "#777777"

WIDTH = 1040
MARGIN_LEFT = 64
MARGIN_RIGHT = 20
MARGIN_BOTTOM = 38
EVENT_ROW = 15
TIMES = "\u00d7"  # the multiplication sign, as in "restart x3"


# --- what the charts read from a mode -------------------------------------------------


def pods(mode: ModeResult, hop: str) -> set[str]:
    """Pods of a hop: any that served a call, and any the steady shares list."""
    found = set(mode.steady.shares.get(hop, {}))
    for bucket in mode.timeline.buckets:
        found.update(bucket.served(hop))
    return found


def cpu_samples(mode: ModeResult, service: str) -> dict[str, tuple[CpuSample, ...]]:
    """The CPU samples of a service's pods; none when the pods had no cgroups."""
    if mode.cpu_timeline is None:
        return {}
    return {pod: xs for pod, xs in mode.cpu_timeline.pods.items() if service_of(pod) == service}


def end_s(mode: ModeResult) -> float:
    """Where the mode's x-axis must reach: its last bucket's end, last event or last CPU
    sample's end (the CPU charts share the calls/s charts' x-axis)."""
    buckets, size = mode.timeline.buckets, mode.timeline.bucket_s
    last = buckets[-1].t + size if buckets else 0.0
    cpu = mode.cpu_timeline
    ends = [xs[-1].t + cpu.interval_s for xs in cpu.pods.values() if xs] if cpu else []
    return max([last, *ends, *(event.t for event in mode.events)])


def sorted_events(mode: ModeResult) -> list[Event]:
    return sorted(mode.events, key=lambda e: e.t)


def _rate(count: int, bucket_s: float) -> float:
    return count / bucket_s if bucket_s > 0 else 0.0


def pod_points(mode: ModeResult, hop: str, pod: str) -> list[tuple[float, float]]:
    """(bucket middle, calls/s) of a pod; a bucket without the pod counts as 0 calls."""
    size = mode.timeline.bucket_s
    return [(b.t + size / 2, _rate(b.served(hop).get(pod, 0), size)) for b in mode.timeline.buckets]


def peak_rate(modes: Sequence[ModeResult], hop: str, failures: bool) -> float:
    """The highest per-pod calls/s of a hop over all modes (and failures/s if charted)."""
    peak = 0.0
    for mode in modes:
        size = mode.timeline.bucket_s
        for bucket in mode.timeline.buckets:
            rates = [_rate(n, size) for n in bucket.served(hop).values()]
            if failures:
                rates.append(_rate(bucket.failures, size))
            peak = max([peak, *(r for r in rates if math.isfinite(r))])
    return peak


# --- what the charts of one hop share -------------------------------------------------


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


def frame_for(
    modes: Sequence[ModeResult], hop: str, plot_height: int, show_failures: bool
) -> Frame:
    x_end = max([1.0, *(end_s(mode) for mode in modes)])
    return Frame(
        hop=hop,
        plot_height=plot_height,
        x_end=x_end,
        y_ticks=svg.ticks(max(peak_rate(modes, hop, show_failures), 1.0)),
        x_ticks=[t for t in svg.ticks(x_end, 10) if t <= x_end + 1e-9],
        # Pods with CPU samples too, so a pod has one color in its hop's calls/s and
        # CPU charts even if it never served a call.
        styles=svg.series_styles(
            pod for mode in modes for pod in pods(mode, hop) | set(cpu_samples(mode, hop))
        ),
        show_failures=show_failures,
    )


# --- event markers ------------------------------------------------------------------


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
        px, width = x(self.events[0].t), svg.text_width(self.label, svg.SMALL_FONT)
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
            room = svg.text_width(f"{event.kind} {TIMES}00", svg.SMALL_FONT) + 6
            if x(event.t) - first_x < room:
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


def event_rows(events: Sequence[Event], x: Linear) -> int:
    """Rows of event labels above a plot."""
    return max(_marker_rows(markers(events, x), x), default=-1) + 1


def plot_top(legend: Legend, events: Sequence[Event], x: Linear) -> float:
    """Where a plot starts: below the title's legend rows and the event labels' rows."""
    return legend.rows * svg.LEGEND_ROW + event_rows(events, x) * EVENT_ROW + 14


def events_svg(events: Sequence[Event], x: Linear, top: float, bottom: float) -> list[str]:
    """Each event (sorted by time) a dashed rule from ``top`` to ``bottom``, labelled
    above ``top``."""
    out = ['<g class="events">']
    found = markers(events, x)
    for marker, row in zip(found, _marker_rows(found, x), strict=True):
        start, end, anchor = marker.span(x)
        label_y = top - 6 - row * EVENT_ROW
        out.append(f'<g class="event" data-kind="{svg.escape(marker.events[0].kind)}">')
        for event in marker.events:
            tooltip = (
                f"{event.kind} at {event.t:g} s: {event.detail}" if event.detail else event.kind
            )
            data = f' data-t="{event.t:g}"'
            out.append(
                svg.vertical_rule(x(event.t), label_y + 3, bottom, EVENT_COLOR, tooltip, data)
            )
        extra = f' text-anchor="{anchor}" font-style="italic"'
        label_x = start if anchor == "start" else end
        out.append(svg.text(label_x, label_y, marker.label, svg.SMALL_FONT, extra) + "</g>")
    out.append("</g>")
    return out


# --- the chart ----------------------------------------------------------------------


def _series_svg(mode: ModeResult, frame: Frame, x: Linear, y: Linear) -> list[str]:
    out = ['<g class="series" fill="none" stroke-width="2" stroke-linejoin="round">']
    for pod in sorted(pods(mode, frame.hop), key=svg.natural_key):
        color, dash = frame.styles[pod]
        points = [(x(t), y(r)) for t, r in pod_points(mode, frame.hop, pod)]
        out.append(svg.polyline(points, color, dash, pod, f' data-pod="{svg.escape(pod)}"'))
    out.append("</g>")
    return out


def _failures_svg(mode: ModeResult, x: Linear, y: Linear) -> list[str]:
    out = [f'<g class="failures" fill="{FAILURE_COLOR}" fill-opacity="0.45">']
    size = mode.timeline.bucket_s
    for bucket in mode.timeline.buckets:
        if bucket.failures <= 0:
            continue
        top = y(_rate(bucket.failures, size))
        title = f"{bucket.failures:,} failed at {bucket.t:g} s"
        out.append(svg.bar(x(bucket.t), x(bucket.t + size), top, y.r0, FAILURE_COLOR, title))
    out.append("</g>")
    return out


def _silent_pods(mode: ModeResult, hop: str) -> int:
    """Pods the scale-up asked for that never show up in the data (they got no call)."""
    if hop != SCALED_HOP or not mode.timeline.buckets:
        return 0
    return max(0, mode.scale_up.end - len(pods(mode, hop)))


def legend_start(title: str) -> float:
    """Where legend entries start: after the chart's title, on its row."""
    return MARGIN_LEFT + svg.text_width(title, svg.FONT + 1) + 24


def title_svg(title: str) -> str:
    return svg.text(MARGIN_LEFT, 14, title, svg.FONT + 1, ' font-weight="600"')


def centred_note(x: Linear, top: float, bottom: float, message: str) -> str:
    """A note in the middle of an empty plot, saying why it is empty."""
    centre = ((x.r0 + x.r1) / 2, (top + bottom) / 2)
    return svg.text(*centre, message, svg.FONT, ' text-anchor="middle"')


def _legend(mode: ModeResult, frame: Frame, title: str, failures: bool) -> Legend:
    entries = [
        LegendEntry(pod, *frame.styles[pod])
        for pod in sorted(pods(mode, frame.hop), key=svg.natural_key)
    ]
    if failures:
        entries.append(LegendEntry("failures/s (all calls)", FAILURE_COLOR, svg.BAR_SWATCH))
    silent = _silent_pods(mode, frame.hop)
    if silent:
        label = f"+{silent} scaled-up pod(s) with no calls"
        entries.append(LegendEntry(label, MUTED_COLOR, svg.NO_SWATCH))
    # Entries flow after the chart title and wrap onto more rows when needed.
    return Legend.flow(entries, legend_start(title), MARGIN_LEFT, WIDTH - MARGIN_RIGHT)


def chart_svg(mode: ModeResult, frame: Frame) -> str:
    """One mode's calls/s per pod on one hop, on the hop's shared scales."""
    title = f"{frame.hop}: calls/s per pod"
    buckets = mode.timeline.buckets
    failures = frame.show_failures and any(b.failures for b in buckets)
    legend = _legend(mode, frame, title, failures)
    events = sorted_events(mode)
    x = Linear(0.0, frame.x_end, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    top = plot_top(legend, events, x)
    bottom = top + frame.plot_height
    height = bottom + MARGIN_BOTTOM
    y = Linear(0.0, frame.y_ticks[-1], bottom, top)
    axes = svg.Axes(
        x,
        y,
        frame.x_ticks,
        frame.y_ticks,
        x_title="seconds since the start of the run",
        y_title="calls/s per pod",
    )
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" data-mode="{svg.escape(mode.name)}" data-hop="{svg.escape(frame.hop)}">',
        f"<title>{svg.escape(f'{mode.name}: {title}')}</title>",
        title_svg(title),
        *legend.svg(),
        *axes.svg(),
        *(_failures_svg(mode, x, y) if failures else []),
        *_series_svg(mode, frame, x, y),
        *events_svg(events, x, top, bottom),
    ]
    if not buckets:
        parts.append(centred_note(x, top, bottom, "no timeline recorded"))
    parts.append("</svg>")
    return "\n".join(parts)
