"""The balancing lab's results as one self-contained HTML page: a table and charts.

``shop lab`` runs one workload in each balancing mode and records, per time bucket,
the calls every pod served, and per interval the CPU each pod used. The page puts a
summary table of every mode first, then the fixed-rate run's table with how its rate
was chosen (``shop.lab.rate_table``), then a section per mode with its charts: calls/s
per pod of each hop (``shop.lab.chart``), each followed by the CPU and throttling of
the same pods (``shop.lab.cpu_chart``). A run without cgroups or an older
``lab.json`` has no CPU or fixed-rate figures, and the page leaves them out.

The page is one file with inline CSS and inline SVG, built with the standard library
only: no server to run, no JavaScript (neither a charting library nor a CDN link), no
fonts or images fetched from anywhere. It opens from disk in any browser, offline,
looks the same in a year, and can be attached to an issue or a review as is. Input is
the lab's results (``shop.lab.results``); all text from it is HTML-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shop.lab.cells import Cell, amount, num, table
from shop.lab.chart import Frame, chart_svg, frame_for
from shop.lab.cost_chart import cost_chart_svg
from shop.lab.cpu_chart import CpuFrame, cpu_chart_svg, cpu_frame_for
from shop.lab.rate_table import NOTES as RATE_NOTES
from shop.lab.rate_table import rate_sentence, rate_table
from shop.lab.results import LabResults, ModeCost, ModeResult, PhaseCalls
from shop.lab.svg import escape

TITLE = "shop lab: gRPC load balancing, mode by mode"
LEDE = (
    "The same workload in each balancing mode: how evenly calls spread over the pods, "
    "and how fast a new pod gets traffic after a scale-up, through a rollout and a "
    "scale-down."
)
# Hops charted per mode, and each chart's plot height in SVG units.
HOPS: tuple[tuple[str, int], ...] = (("inventory", 220), ("orders", 150))

CSS = """
body { margin: 0; background: #fafafa; color: #222;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 2px; }
.lede { margin: 0 0 12px; color: #444; }
.offered { margin: 0 0 12px; color: #333; }
.caption { margin: 0 0 6px; font-weight: 600; }
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


def _seconds(value: float | None) -> tuple[str, str]:
    """Cell text and class for a clock: "never" when the event did not happen."""
    if value is None:
        return "never", "never"
    return f"{float(value):.1f} s", ""


def _failed_of(phase: PhaseCalls) -> tuple[str, str]:
    return f"{phase.failures:,} / {phase.calls:,}", "bad" if phase.failures else ""


# --- the summary table --------------------------------------------------------------

SUMMARY_COLUMNS = (
    "mode",
    "steady calls/s",
    "p50 ms",
    "p99 ms",
    "inventory imbalance",
    "app CPU s / 1k calls",
    "proxy CPU s / 1k calls",
    "proxy MiB",
    "scale-up: first call on a new pod",
    "scale-up: 80% fair share",
    "rollout failed / calls",
    "scale-down failed / calls",
    "retries (events run)",
)
RETRIES_TIP = (
    "attempts that reached the servers as retries during the events run: failures a "
    "retry hid from the caller"
)


def _retries(mode: ModeResult) -> Cell:
    """All retries of the run, per service in the tooltip (``inventory 3 · orders 0``);
    "-" when not counted (an older lab.json)."""
    if not mode.retries:
        return "-", "", RETRIES_TIP
    per_service = " · ".join(f"{service} {n:,}" for service, n in sorted(mode.retries.items()))
    return f"{sum(mode.retries.values()):,}", "", f"{RETRIES_TIP}: {per_service}"


def _cost_cells(cost: ModeCost | None) -> list[Cell]:
    """App CPU, proxy CPU, memory per proxy (x proxies)."""
    if cost is None:
        return [("-", "", "")] * 3
    memory = "-" if cost.proxy_rss_mib is None else f"{cost.proxy_rss_mib:.0f} x {cost.proxies}"
    return [
        (num(cost.app_cpu_s_per_1000_calls, 2), "", "the replicas' processes"),
        (num(cost.proxy_cpu_s_per_1000_calls, 2), "", "the mode's proxies (L4 proxy, sidecars)"),
        (escape(memory), "", "mean resident memory per proxy x proxies"),
    ]


def _summary_cells(index: int, mode: ModeResult) -> list[Cell]:
    """(html, class, tooltip) per column of one mode's row."""
    steady, scale_up = mode.steady, mode.scale_up
    scaled = f"inventory {scale_up.start} → {scale_up.end} pods, "
    window = f"watched for {scale_up.window_s:g} s"
    first, first_class = _seconds(scale_up.first_traffic_s)
    fair, fair_class = _seconds(scale_up.fair_share_s)
    rollout, rollout_class = _failed_of(mode.rollout)
    down, down_class = _failed_of(mode.scale_down)
    return [
        (f'<a href="#mode-{index}">{escape(mode.name)}</a>', "", mode.description),
        (num(steady.calls_per_s, 0), "", ""),
        (num(steady.p50_ms, 1), "", ""),
        (num(steady.p99_ms, 1), "", ""),
        (num(steady.imbalance["inventory"], 2), "", "busiest pod's share / mean share"),
        *_cost_cells(steady.cost),
        (escape(first), first_class, scaled + window),
        (escape(fair), fair_class, scaled + window),
        (escape(rollout), rollout_class, ""),
        (escape(down), down_class, ""),
        _retries(mode),
    ]


def summary_table(modes: Sequence[ModeResult]) -> str:
    rows = [_summary_cells(i, mode) for i, mode in enumerate(modes)]
    return table(SUMMARY_COLUMNS, rows, "summary")


NOTES = (
    "Steady: the balanced phase before any scaling. Imbalance: the busiest inventory "
    "pod's share of calls / the mean share (1.00 is even). Scale-up: seconds from the "
    "scale-up until a new pod served its first call, and until the new pods got 80% of "
    "a fair share; never: not within the window watched. Rollout and scale-down: calls "
    "that failed while pods were restarted or removed, of all calls in that phase. "
    "CPU per 1000 calls: of the replicas' processes and, apart, of the mode's proxies "
    "(the service proxy in clusterip, the Envoy sidecars in istio). "
    "Retries: attempts the servers saw arrive as retries over the events run."
)


def _rates(modes: Sequence[ModeResult]) -> str:
    """The fixed-rate table and its notes; nothing when no mode ran at a fixed rate."""
    found = rate_table(modes)
    if found is None:
        return ""
    return (
        f'<p class="caption">At a fixed rate</p>\n{found}\n'
        f'<p class="notes">{escape(RATE_NOTES)}</p>\n'
    )


def _offered(results: LabResults) -> str:
    sentence = rate_sentence(results)
    return "" if sentence is None else f'<p class="offered">{sentence}</p>\n'


def _settings(settings: Mapping[str, Any]) -> str:
    if not settings:
        return ""
    items = "".join(
        f"<code>{escape(key)}={escape(json.dumps(value, sort_keys=True, default=str))}</code>"
        for key, value in settings.items()
    )
    return f'<p class="settings">Settings: {items}</p>'


# --- a section per mode -------------------------------------------------------------


def _facts(mode: ModeResult) -> str:
    steady, scale_up = mode.steady, mode.scale_up
    first, _ = _seconds(scale_up.first_traffic_s)
    fair, _ = _seconds(scale_up.fair_share_s)
    facts = (
        f"<b>steady</b> {num(steady.calls_per_s, 0)} calls/s, "
        f"p99 {num(steady.p99_ms, 2)} ms, {steady.failures:,} failed · "
        f"<b>scale-up {escape(scale_up.start)} → {escape(scale_up.end)}</b> "
        f"first call {escape(first)}, 80% fair share {escape(fair)} · "
        f"<b>rollout</b> {escape(_failed_of(mode.rollout)[0])} failed · "
        f"<b>scale-down</b> {escape(_failed_of(mode.scale_down)[0])} failed"
    )
    run = mode.fixed_rate
    if run is not None:
        facts += (
            f" · <b>fixed rate</b> {amount(run.rate)} calls/s, p99 {num(run.p99_ms, 2)} ms, "
            f"{run.within_objective:.1%} within {run.objective_ms:g} ms"
        )
    node = mode.node_client
    if node is not None:
        shares = " ".join(f"{share:.0%}" for share in node.shares.values())
        facts += (
            f" · <b>Node.js client</b> (grpc-js) {node.calls:,} calls, "
            f"{node.failures:,} failed, inventory shares {escape(shares)}"
        )
    return f'<p class="facts">{facts}</p>'


NO_CPU = "No per-pod CPU was recorded in this mode: its pods ran without cgroups."


def _figures(mode: ModeResult, frame: Frame, cpu: CpuFrame | None) -> list[str]:
    """The hop's calls/s chart, then the CPU of the same pods right under it."""
    figures = [chart_svg(mode, frame)]
    if cpu is not None and mode.cpu_timeline is not None:
        figures.append(cpu_chart_svg(mode, cpu))
    return [f"<figure>{figure}</figure>" for figure in figures]


def mode_section(
    index: int,
    mode: ModeResult,
    frames: Sequence[Frame],
    cpu_frames: Sequence[CpuFrame | None],
) -> str:
    """A mode's heading, facts and charts; ``cpu_frames`` pairs with ``frames`` (None:
    no mode sampled that hop's pods)."""
    pairs = zip(frames, cpu_frames, strict=True)
    figures = [figure for frame, cpu in pairs for figure in _figures(mode, frame, cpu)]
    # Other modes have CPU charts and this one has none: say why, not leave a hole.
    if any(cpu_frames) and mode.cpu_timeline is None:
        figures.append(f'<p class="notes">{escape(NO_CPU)}</p>')
    charts = "\n".join(figures)
    description = (
        f'<p class="description">{escape(mode.description)}</p>' if mode.description else ""
    )
    return (
        f'<section class="mode" id="mode-{index}">'
        f"<h2>{escape(mode.name)}</h2>{description}{_facts(mode)}\n{charts}</section>"
    )


# --- the page -----------------------------------------------------------------------


def _cost(modes: Sequence[ModeResult]) -> str:
    chart = cost_chart_svg(modes)
    return f"<figure>{chart}</figure>\n" if chart else ""


def _mesh(results: LabResults) -> str:
    """The mesh's cost in a sentence or two: added latency and CPU per sidecar."""
    sentences = [line[0].upper() + line[1:] + "." for line in results.mesh_cost_lines()]
    return f'<p class="mesh">{escape(" ".join(sentences))}</p>\n' if sentences else ""


@dataclass(frozen=True)
class ScenarioLink:
    """A scenario page written beside this one (``shop lab --scenario``)."""

    href: str  # relative to the page
    title: str
    question: str


def _scenarios(links: Sequence[ScenarioLink]) -> str:
    if not links:
        return ""
    items = "".join(
        f'<li><a href="{escape(link.href)}">{escape(link.title)}</a>: {escape(link.question)}</li>'
        for link in links
    )
    return (
        '<section class="scenarios"><h2>Scenarios: pods that are not equal</h2>'
        f"<ul>{items}</ul></section>\n"
    )


def render_html(results: LabResults, scenarios: Sequence[ScenarioLink] = ()) -> str:
    """The whole page for a lab run: summary table, then charts per mode; links to the
    scenario pages written beside it, if any."""
    modes = results.modes
    frames = [
        frame_for(modes, hop, height, show_failures=(i == 0))
        for i, (hop, height) in enumerate(HOPS)
    ]
    cpu_frames = [cpu_frame_for(modes, frame) for frame in frames]
    sections = "\n".join(mode_section(i, mode, frames, cpu_frames) for i, mode in enumerate(modes))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(TITLE)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f'<h1>{escape(TITLE)}</h1>\n<p class="lede">{escape(LEDE)}</p>\n'
        f"{_offered(results)}"
        f"{_settings(results.settings)}\n"
        f"{summary_table(modes)}\n"
        f'<p class="notes">{escape(NOTES)}</p>\n'
        f"{_cost(modes)}"
        f"{_mesh(results)}"
        f"{_rates(modes)}"
        f"{_scenarios(scenarios)}"
        f"{sections}\n</main>\n</body>\n</html>\n"
    )


def write_page(results: LabResults, path: Path, scenarios: Sequence[ScenarioLink] = ()) -> Path:
    """Write the page to ``path`` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results, scenarios), encoding="utf-8")
    return path
