"""A scenario's results as a terminal table and a self-contained HTML page with a chart.

One list of rows per scenario serves both: the terminal shows modes as columns (as
``shop.lab.report`` does), the page shows the same figures as a table, then a chart:

- ``slow-pod``: the slow pod's share of its service's calls per mode, beside the share
  an even spread gives it and the share its CPU limit would justify;
- ``failing-pod``: attempts per second the failing pod answered over the run, one line
  per mode, so "ejected after 1 s" and "never ejected" are seen, not read.

Like the lab's page: inline CSS and SVG, no JavaScript, nothing fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from shop.lab import capacity, svg
from shop.lab.page import CSS
from shop.lab.report import percent_shares, seconds_or_never
from shop.lab.scenario_results import FailingPodMode, ScenarioResults, SlowPodMode, WaitPoint
from shop.lab.scenarios import SCENARIOS, WAIT_AGE, WAIT_CHART, WAIT_RERESOLUTION, WAIT_TTL

WIDTH = 1040
MARGIN_LEFT = 150
MARGIN_RIGHT = 60


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _shares(mode: SlowPodMode) -> str:
    return percent_shares(mode.steady.shares[mode.service])


def _slow_pod_cpu(mode: SlowPodMode) -> str:
    pod = next((p for p in mode.fixed_rate.pods if p.pod == mode.slow_pod), None)
    if pod is None or pod.limit_cores is None:
        return "-"
    return f"{pod.cores / pod.limit_cores:.0%}·{pod.throttled_share:.0%}"


SLOW_ROWS: tuple[tuple[str, Callable[[SlowPodMode], str]], ...] = (
    ("slow pod share", lambda m: _pct(m.slow_share)),
    ("inv. share %", _shares),
    ("closed calls/s", lambda m: f"{m.steady.calls_per_s:.0f}"),
    ("closed p50/p99", lambda m: f"{m.steady.p50_ms:.0f}/{m.steady.p99_ms:.0f}"),
    ("fixed p50/p99", lambda m: f"{m.fixed_rate.p50_ms:.0f}/{m.fixed_rate.p99_ms:.0f}"),
    ("fixed in objective", lambda m: f"{m.fixed_rate.within_objective:.1%}"),
    ("fixed failed", lambda m: f"{m.fixed_rate.failures}"),
    ("slow CPU·thr.", _slow_pod_cpu),
)


def _stopped(mode: FailingPodMode) -> str:
    if mode.stopped_after_s is None:
        return "-"  # it got no attempt at all (a pinned client chose another pod)
    return f"{mode.stopped_after_s:.1f} s" if mode.ejected else "never"


def _retried(mode: FailingPodMode) -> str:
    """Retried attempts that reached the healthy pods / the failing one."""
    at_failing = mode.retried.get(mode.failing_pod, 0)
    return f"{sum(mode.retried.values()) - at_failing}/{at_failing}"


FAILING_ROWS: tuple[tuple[str, Callable[[FailingPodMode], str]], ...] = (
    ("caller calls", lambda m: f"{m.calls}"),
    ("caller failed", lambda m: f"{m.failures}"),
    ("failed %", lambda m: f"{m.failures / max(1, m.calls):.1%}"),
    ("p99 ms", lambda m: f"{m.p99_ms:.0f}"),
    ("failing attempts", lambda m: f"{m.failing_attempts}"),
    ("attempt share", lambda m: _pct(m.failing_share)),
    ("ejected after", _stopped),
    ("retries ok/bad", _retried),
)

SLOW_NOTES = (
    "slow pod share: of the inventory calls in the closed loop (an even spread gives "
    "each pod 1/n); inv. share: % per pod; closed: the closed loop, latency in ms; fixed: "
    "the open loop at the fixed rate, latency from the intended send time, failed calls; "
    "slow CPU·thr.: at the fixed rate, the slow pod's CPU as a share of its limit · the "
    "share of CFS periods in which it was throttled."
)
FAILING_NOTES = (
    "caller: the load generator at the gateway, closed loop; failed: calls it saw fail "
    "(after every retry), p99 its latency; failing attempts: answered by the failing pod, "
    "as its own counters say; attempt share: of all the inventory pods' attempts; "
    "ejected after: when it got its "
    "last attempt, seconds after the load began ('never': it still got attempts at the "
    "end; '-': it got none at all); retries: attempts that reached the healthy pods / the "
    "failing one as a gRPC retry (Envoy's own retries carry no such mark and count as "
    "plain attempts)."
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


WAIT_COLUMNS = (
    "point", "max age", "grace", "re-resolution", "DNS TTL", "first call", "fair share",
)  # fmt: skip
WAIT_NOTES = (
    "Each point adds one inventory pod under a closed loop; first call: until a call to it "
    "completed, fair share: until it served 80% of an even share, both from the moment it "
    "was ready and published (the timeline's resolution: its bucket); 'never': not within "
    "the point's window. Headless points change one part of the lab's headless (2 s max age, "
    "1 s grace, 1 s re-resolution, TTL 1 s) at a time; the chart's defaults are 30 s, 5 s, "
    "5 s and CoreDNS's 5 s TTL; proxyless and istio get the new pod from the xDS push."
)


def _table(results: ScenarioResults) -> tuple[list[str], list[list[str]], str]:
    """(column headers, rows, notes): modes as columns for the pod scenarios, a row per
    point for the sweep."""
    if results.scenario == "new-pod-wait":
        points = [m for m in results.modes if isinstance(m, WaitPoint)]
        rows = [
            [
                p.name, _seconds(p.max_age_s), _seconds(p.grace_s), _seconds(p.reresolution_s),
                _seconds(p.ttl_s), seconds_or_never(p.first_traffic_s),
                seconds_or_never(p.fair_share_s),
            ]
            for p in points
        ]  # fmt: skip
        return list(WAIT_COLUMNS), rows, WAIT_NOTES
    names = [m.name for m in results.modes]
    if results.scenario == "slow-pod":
        slow = [m for m in results.modes if isinstance(m, SlowPodMode)]
        rows = [[label, *(read(m) for m in slow)] for label, read in SLOW_ROWS]
        return ["", *names], rows, SLOW_NOTES
    failing = [m for m in results.modes if isinstance(m, FailingPodMode)]
    rows = [[label, *(read(m) for m in failing)] for label, read in FAILING_ROWS]
    return ["", *names], rows, FAILING_NOTES


def print_scenario_table(results: ScenarioResults, console: Console) -> None:
    scenario = SCENARIOS[results.scenario]
    table = Table(
        title=f"scenario {scenario.name}: {scenario.title}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        # Six modes of nine characters fit 80 columns only with one space between them.
        collapse_padding=True,
        pad_edge=False,
    )
    columns, rows, notes = _table(results)
    table.add_column(columns[0], no_wrap=True)
    for column in columns[1:]:
        table.add_column(column.replace("-", "-\n"), justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(scenario.question, highlight=False)
    console.print(table)
    if results.offered is not None:
        objective = float(results.settings.get("objective_ms", 0.0))
        console.print("fixed rate: " + capacity.describe(results.offered, objective))
    console.print(notes, highlight=False)


# --- charts -------------------------------------------------------------------------


def slow_pod_chart(modes: Sequence[SlowPodMode]) -> str:
    """Bars: the slow pod's share per mode; rules at the even share and at the share
    its CPU limit would justify."""
    if not modes:
        return ""
    title = "the slow pod's share of inventory calls, closed loop"
    row, bar_height, top = 32, 22, 56
    bottom = top + row * len(modes)
    height = bottom + 44
    first = modes[0]
    n = len(first.steady.shares[first.service])
    even = 1 / n
    by_cpu = first.slow_cores / (first.slow_cores + (n - 1) * first.peer_cores)
    high = max([even, by_cpu, *(m.slow_share for m in modes)]) * 1.15
    x_ticks = svg.ticks(high * 100)
    percent = svg.Linear(0.0, x_ticks[-1] or 1.0, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)

    def x(share: float) -> float:
        return percent(share * 100)

    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        'data-chart="slow-pod">',
        f"<title>{svg.escape(title)}</title>",
        svg.text(0, 14, title, svg.FONT, ' font-weight="600"'),
        *svg.vertical_grid(percent, x_ticks, top - 6, bottom, "%"),
    ]
    for label, share, color in (
        ("even spread", even, svg.AXIS_COLOR),
        ("by CPU limit", by_cpu, svg.PALETTE[3]),
    ):
        px = x(share)
        parts.append(
            svg.vertical_rule(px, top - 18, bottom, color, f"{label}: {share:.0%}",
                              f' data-rule="{svg.escape(label)}"')
        )  # fmt: skip
        parts.append(svg.text(px + 4, top - 22, f"{label} {share:.0%}", svg.SMALL_FONT))
    for index, mode in enumerate(modes):
        y0 = top + index * row
        middle = y0 + bar_height / 2 + 4
        parts.append(svg.text(MARGIN_LEFT - 8, middle, mode.name, svg.FONT, ' text-anchor="end"'))
        color = svg.PALETTE[0]
        rect = svg.bar(x(0), x(mode.slow_share), y0, y0 + bar_height, color,
                       f"{mode.name}: {mode.slow_share:.1%}")  # fmt: skip
        parts.append(
            f'<g data-mode="{svg.escape(mode.name)}" fill="{color}" fill-opacity="0.45">{rect}</g>'
        )
        parts.append(
            svg.text(x(mode.slow_share) + 6, middle, f"{mode.slow_share:.0%}", svg.SMALL_FONT)
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _line_frame(
    title: str,
    chart: str,
    names: Sequence[str],
    highs: tuple[float, float],
    axis_titles: tuple[str, str],
    right_labels: float = 0.0,
) -> tuple[list[str], svg.Axes, dict[str, tuple[str, str]]]:
    """The start of a line chart: the <svg> element, title, legend (a colour per name)
    and axes from 0 to ``highs``; ``right_labels`` leaves room right of the plot. Returns
    the open parts, the axes and the styles; the caller adds its marks and ``</svg>``."""
    styles = {name: (svg.PALETTE[i % len(svg.PALETTE)], "") for i, name in enumerate(names)}
    legend = svg.Legend.flow(
        [svg.LegendEntry(name, color, dash) for name, (color, dash) in styles.items()],
        start=svg.text_width(title, svg.FONT) + 40,
        left=70,
        right=WIDTH - MARGIN_RIGHT,
    )
    top = 30 + legend.rows * svg.LEGEND_ROW
    bottom = top + 230
    height = bottom + 44
    x_ticks = svg.ticks(highs[0] or 1.0)
    y_ticks = svg.ticks(highs[1] or 1.0)
    axes = svg.Axes(
        x=svg.Linear(0.0, x_ticks[-1] or 1.0, 70, WIDTH - MARGIN_RIGHT - right_labels),
        y=svg.Linear(0.0, y_ticks[-1] or 1.0, bottom, top),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        x_title=axis_titles[0],
        y_title=axis_titles[1],
    )
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'data-chart="{chart}">',
        f"<title>{svg.escape(title)}</title>",
        svg.text(0, 14, title, svg.FONT, ' font-weight="600"'),
        *legend.svg(),
        *axes.svg(),
        '<g fill="none" stroke-width="2">',
    ]
    return parts, axes, styles


def failing_pod_chart(modes: Sequence[FailingPodMode]) -> str:
    """Lines: attempts/s the failing pod answered over the run, one per mode."""
    if not modes:
        return ""
    title = "attempts/s the failing pod answered"
    series: dict[str, list[tuple[float, float]]] = {}
    for mode in modes:
        points = []
        previous = 0.0
        for t, pods in mode.attempt_timeline:
            interval = t - previous if t > previous else 1.0
            points.append((t, pods.get(mode.failing_pod, 0) / interval))
            previous = t
        series[mode.name] = points
    end = max((t for points in series.values() for t, _ in points), default=1.0)
    peak = max((v for points in series.values() for _, v in points), default=1.0)
    parts, axes, styles = _line_frame(
        title,
        "failing-pod",
        list(series),
        (end, peak),
        ("seconds since the load began", "attempts/s"),
    )
    for name, points in series.items():
        color, dash = styles[name]
        pixels = [(axes.x(t), axes.y(v)) for t, v in points]
        parts.append(
            svg.polyline(pixels, color, dash, f"{name}: attempts/s at the failing pod",
                         f' data-mode="{svg.escape(name)}"')
        )  # fmt: skip
    parts.append("</g></svg>")
    return "\n".join(parts)


def wait_chart(points: Sequence[WaitPoint]) -> str:
    """Seconds until the new pod's fair share against each swept part of headless (the
    lab's point on every line), with the xDS modes and the chart's defaults as rules."""
    title = "seconds until a new pod gets 80% of its fair share"
    value_of = {
        WAIT_AGE: lambda p: p.max_age_s,
        WAIT_RERESOLUTION: lambda p: p.reresolution_s,
        WAIT_TTL: lambda p: p.ttl_s,
    }
    lab = next((p for p in points if p.mode == "headless" and p.varied not in value_of
                and p.varied != WAIT_CHART), None)  # fmt: skip
    series: dict[str, list[tuple[float, float]]] = {}
    for varied, read in value_of.items():
        chosen = [p for p in points if p.varied == varied] + ([lab] if lab else [])
        measured = [(read(p), p.fair_share_s) for p in chosen]
        points_xy = sorted((float(x), y) for x, y in measured if x is not None and y is not None)
        if points_xy:
            series[varied] = points_xy
    rules = [p for p in points if p.mode != "headless" or p.varied == WAIT_CHART]
    if not series and not rules:
        return ""
    xs = [x for line in series.values() for x, _ in line]
    ys = [y for line in series.values() for _, y in line]
    ys += [p.fair_share_s for p in rules if p.fair_share_s is not None]
    parts, axes, styles = _line_frame(
        title,
        "new-pod-wait",
        list(series),
        (max(xs, default=1.0), max(ys, default=1.0)),
        ("the swept setting, seconds", "seconds to fair share"),
        right_labels=150,
    )
    for name, line in series.items():
        color, dash = styles[name]
        pixels = [(axes.x(x), axes.y(y)) for x, y in line]
        parts.append(
            svg.polyline(pixels, color, dash, f"{name}: seconds to fair share",
                         f' data-series="{svg.escape(name)}"')
        )  # fmt: skip
        for px, py in pixels:
            parts.append(
                f'<circle cx="{svg.coord(px)}" cy="{svg.coord(py)}" r="3" fill="{color}"/>'
            )
    parts.append("</g>")
    for index, point in enumerate(rules):
        if point.fair_share_s is None:
            continue
        y = axes.y(point.fair_share_s)
        color = svg.PALETTE[4 + index % 4]
        label = f"{point.name}: {point.fair_share_s:.1f} s"
        parts.append(
            svg.horizontal_rule(axes.x.r0, axes.x.r1, y, color, label,
                                f' data-rule="{svg.escape(point.name)}"')
        )  # fmt: skip
        parts.append(svg.text(axes.x.r1 + 6, y + 4, label, svg.SMALL_FONT))
    parts.append("</svg>")
    return "\n".join(parts)


# --- the page -----------------------------------------------------------------------


def render_scenario_html(results: ScenarioResults) -> str:
    scenario = SCENARIOS[results.scenario]
    columns, rows, notes = _table(results)
    head = "".join(f'<th scope="col">{svg.escape(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{svg.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    if results.scenario == "slow-pod":
        chart = slow_pod_chart([m for m in results.modes if isinstance(m, SlowPodMode)])
    elif results.scenario == "failing-pod":
        chart = failing_pod_chart([m for m in results.modes if isinstance(m, FailingPodMode)])
    else:
        chart = wait_chart([m for m in results.modes if isinstance(m, WaitPoint)])
    offered = ""
    if results.offered is not None:
        objective = float(results.settings.get("objective_ms", 0.0))
        offered = (
            f'<p class="offered">{svg.escape(capacity.describe(results.offered, objective))}</p>'
        )
    descriptions = "".join(
        f"<li><b>{svg.escape(m.name)}</b>: {svg.escape(m.description)}</li>"
        for m in results.modes
        if not isinstance(m, WaitPoint)
    )
    title = f"shop lab scenario: {scenario.title}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{svg.escape(title)}</title>",
            f"<style>{CSS}</style></head><body><main>",
            f"<h1>{svg.escape(title)}</h1>",
            f'<p class="lede">{svg.escape(scenario.question)}</p>',
            offered,
            f'<table class="scenario"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>',
            f'<p class="notes">{svg.escape(notes)}</p>',
            f"<figure>{chart}</figure>",
            f'<ul class="description">{descriptions}</ul>',
            "</main></body></html>",
        ]
    )


def write_scenario_page(results: ScenarioResults, path: Path) -> Path:
    path.write_text(render_scenario_html(results), encoding="utf-8")
    return path
