"""One lab CPU chart: a mode's CPU per pod of one service over the events run, read
from the pods' cgroups, with each pod's CPU limit and how often the limit bit.

The calls/s charts show where calls went; these show what that cost each pod, and
whether a pod that got more than its share ran into its limit. A pod at its limit is
throttled: the kernel stops it until the next CFS period, however idle the machine,
and its calls wait. So the chart is two panels on one x-axis:

- on top, cores used per interval, a line per pod, with each CPU limit as a dashed
  horizontal rule;
- under it, a thin band with the share of CFS periods in which each pod was throttled
  (0-100%), a line per pod in the same colors.

Throttling is a band under the CPU panel rather than a chart of its own because it is
the CPU panel's consequence: a line that reaches its limit rule above and the same
pod's throttling rising right under it read as one story, at the same x, and a
separate chart would repeat the legend and the events for every mode and service.
Lines rather than a heat strip per pod keep the pods' colors and make the band's
values readable on its axis. The band is left out for a service whose pods have no
limit in any mode (nothing throttles them).

The charts chart the hops the calls/s charts do (inventory, the scaled hop, whose
pods come and go; and orders, which calls it), each under its hop's calls/s chart:
a pod keeps its color from that chart (``shop.lab.chart.Frame.styles``), the x-axis
is the same, and events are marked the same way. Other services' pods (the single
gateway) see the same load in every mode, so charting them would not compare modes.
Each service's CPU charts share one y-scale across the modes, as small multiples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shop.lab import svg
from shop.lab.chart import (
    MARGIN_LEFT,
    MARGIN_RIGHT,
    WIDTH,
    Frame,
    centred_note,
    cpu_samples,
    events_svg,
    legend_start,
    plot_top,
    sorted_events,
    title_svg,
)
from shop.lab.results import CpuSample, ModeResult
from shop.lab.svg import Legend, LegendEntry, Linear

PLOT_HEIGHT = 150
BAND_HEIGHT = 64
BAND_GAP = 14  # between the CPU panel's baseline and the band's top
MARGIN_BOTTOM = 38
LIMIT_COLOR = "#444444"
PERCENT_TICKS = (0.0, 50.0, 100.0)
# A gap in a pod's samples longer than this many intervals is drawn as a gap (the pod
# was not there, e.g. restarting), not joined.
GAP_INTERVALS = 1.5
HEADROOM = 1.05


# --- what the charts read from a mode -------------------------------------------------


def limits(mode: ModeResult, service: str) -> dict[str, float]:
    """Pod -> CPU limit (cores) of a service's pods that have one."""
    if mode.cpu_timeline is None:
        return {}
    found = mode.cpu_timeline.limits
    return {pod: found[pod] for pod in cpu_samples(mode, service) if pod in found}


def limit_levels(mode: ModeResult, service: str) -> dict[float, list[str]]:
    """Limit (cores) -> its pods: one rule per level, not one per pod on top of another."""
    levels: dict[float, list[str]] = {}
    for pod, limit in sorted(limits(mode, service).items(), key=lambda kv: svg.natural_key(kv[0])):
        levels.setdefault(limit, []).append(pod)
    return levels


def runs(samples: Sequence[CpuSample], interval_s: float) -> list[list[CpuSample]]:
    """Samples (any order) split where the pod has none for more than an interval."""
    out: list[list[CpuSample]] = []
    for sample in sorted(samples, key=lambda s: s.t):
        if out and sample.t - out[-1][-1].t <= interval_s * GAP_INTERVALS:
            out[-1].append(sample)
        else:
            out.append([sample])
    return out


# --- what the CPU charts of one service share -----------------------------------------


@dataclass(frozen=True)
class CpuFrame:
    """What all CPU charts of one service share: the x-axis and colors of its calls/s
    charts, one y-scale in cores, and whether the throttling band is drawn."""

    service: str
    x_end: float
    x_ticks: Sequence[float]
    y_ticks: Sequence[float]
    styles: Mapping[str, tuple[str, str]]
    throttling: bool


def cpu_frame_for(modes: Sequence[ModeResult], calls: Frame) -> CpuFrame | None:
    """The CPU frame under a hop's calls/s frame; None when no mode sampled its pods."""
    service = calls.hop
    samples = [xs for mode in modes for xs in cpu_samples(mode, service).values()]
    if not samples:
        return None
    set_limits = [limit for mode in modes for limit in limits(mode, service).values()]
    # The y-scale reaches past the highest limit: a rule above the plot would not show,
    # and one on its top edge would merge with the top gridline.
    peak = max([0.0, *(s.cores for xs in samples for s in xs), *set_limits]) * HEADROOM
    throttled = any(s.throttled_share > 0 for xs in samples for s in xs)
    return CpuFrame(
        service=service,
        x_end=calls.x_end,
        x_ticks=calls.x_ticks,
        y_ticks=svg.ticks(peak) if peak > 0 else [0.0, 1.0],
        styles=calls.styles,
        throttling=bool(set_limits) or throttled,
    )


# --- the chart ----------------------------------------------------------------------


def _series_svg(
    mode: ModeResult, frame: CpuFrame, x: Linear, y: Linear, throttling: bool
) -> list[str]:
    """A line per pod: cores used, or the percentage of periods throttled."""
    if mode.cpu_timeline is None:
        return []
    interval = mode.cpu_timeline.interval_s
    found = cpu_samples(mode, frame.service)
    what = "% of CFS periods throttled" if throttling else "cores used"
    out = ['<g class="series" fill="none" stroke-width="2" stroke-linejoin="round">']
    for pod in sorted(found, key=svg.natural_key):
        color, dash = frame.styles[pod]
        points = [
            [
                (x(s.t + interval / 2), y(s.throttled_share * 100 if throttling else s.cores))
                for s in run
            ]
            for run in runs(found[pod], interval)
        ]
        data = f' data-pod="{svg.escape(pod)}"'
        out.append(svg.path(points, color, dash, f"{pod}: {what}", data))
    out.append("</g>")
    return out


def _limits_svg(mode: ModeResult, service: str, x: Linear, y: Linear) -> list[str]:
    out = ['<g class="limits">']
    for limit, pods in limit_levels(mode, service).items():
        title = f"CPU limit {limit:g} core: {', '.join(pods)}"
        data = f' data-limit="{limit:g}"'
        out.append(svg.horizontal_rule(x.r0, x.r1, y(limit), LIMIT_COLOR, title, data))
        label = f"limit {limit:g} core"
        out.append(svg.text(x.r1 - 4, y(limit) - 4, label, svg.SMALL_FONT, ' text-anchor="end"'))
    out.append("</g>")
    return out


def _legend(mode: ModeResult, frame: CpuFrame, title: str) -> Legend:
    pods = sorted(cpu_samples(mode, frame.service), key=svg.natural_key)
    entries = [LegendEntry(pod, *frame.styles[pod]) for pod in pods]
    if limits(mode, frame.service):
        entries.append(LegendEntry("CPU limit", LIMIT_COLOR, svg.RULE_DASH))
    return Legend.flow(entries, legend_start(title), MARGIN_LEFT, WIDTH - MARGIN_RIGHT)


def cpu_chart_svg(mode: ModeResult, frame: CpuFrame) -> str:
    """One mode's CPU (and throttling) per pod of one service, on the shared scales."""
    title = f"{frame.service}: CPU cores per pod"
    if frame.throttling:
        title += ", and % of periods throttled"
    legend = _legend(mode, frame, title)
    events = sorted_events(mode)
    x = Linear(0.0, frame.x_end, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    top = plot_top(legend, events, x)
    cpu_bottom = top + PLOT_HEIGHT
    y = Linear(0.0, frame.y_ticks[-1], cpu_bottom, top)
    x_title = "seconds since the start of the run"
    cpu_axes = svg.Axes(
        x, y, frame.x_ticks, frame.y_ticks, x_title, "cores per pod", x_labels=not frame.throttling
    )
    bottom = cpu_bottom
    band: list[str] = []
    if frame.throttling:
        bottom = cpu_bottom + BAND_GAP + BAND_HEIGHT
        y_band = Linear(0.0, 100.0, bottom, bottom - BAND_HEIGHT)
        band_axes = svg.Axes(x, y_band, frame.x_ticks, PERCENT_TICKS, x_title, "% throttled")
        band = [
            '<g class="throttling">',
            *band_axes.svg(),
            *_series_svg(mode, frame, x, y_band, True),
            "</g>",
        ]
    height = bottom + MARGIN_BOTTOM
    name = svg.escape(mode.name)
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'data-mode="{name}" data-chart="cpu" data-service="{svg.escape(frame.service)}">',
        f"<title>{svg.escape(f'{mode.name}: {title}')}</title>",
        title_svg(title),
        *legend.svg(),
        '<g class="cpu">',
        *cpu_axes.svg(),
        *_limits_svg(mode, frame.service, x, y),
        *_series_svg(mode, frame, x, y, False),
        "</g>",
        *band,
        *events_svg(events, x, top, bottom),
    ]
    if not cpu_samples(mode, frame.service):
        message = f"no CPU samples of {frame.service} pods"
        parts.append(centred_note(x, top, cpu_bottom, message))
    parts.append("</svg>")
    return "\n".join(parts)
