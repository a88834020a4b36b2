"""The balancing lab's results as one self-contained HTML page: a table and charts.

``shop lab`` runs one workload in each balancing mode and records, per time bucket,
the calls every pod served. The page puts a summary table of every mode first, then
a section per mode with its charts (``shop.lab.chart``).

The page is one file with inline CSS and inline SVG, built with the standard library
only: no server to run, no JavaScript (neither a charting library nor a CDN link), no
fonts or images fetched from anywhere. It opens from disk in any browser, offline,
looks the same in a year, and can be attached to an issue or a review as is. Input is
the lab's results (``shop.lab.results``); all text from it is HTML-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shop.lab.chart import Frame, chart_svg, frame_for
from shop.lab.results import LabResults, ModeResult, PhaseCalls
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


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{float(value):,.{digits}f}"


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
    "CPU s / 1000 calls",
    "scale-up: first call on a new pod",
    "scale-up: 80% fair share",
    "rollout failed / calls",
    "scale-down failed / calls",
)


def _summary_cells(index: int, mode: ModeResult) -> list[tuple[str, str, str]]:
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
        (_num(steady.calls_per_s, 0), "", ""),
        (_num(steady.p50_ms, 2), "", ""),
        (_num(steady.p99_ms, 2), "", ""),
        (_num(steady.imbalance["inventory"], 2), "", "busiest pod's share / mean share"),
        (_num(steady.cpu_s_per_1000_calls, 2), "", ""),
        (escape(first), first_class, scaled + window),
        (escape(fair), fair_class, scaled + window),
        (escape(rollout), rollout_class, ""),
        (escape(down), down_class, ""),
    ]


def _cell(content: str, css_class: str, tooltip: str) -> str:
    attrs = f' class="{css_class}"' if css_class else ""
    attrs += f' title="{escape(tooltip)}"' if tooltip else ""
    return f"<td{attrs}>{content}</td>"


def summary_table(modes: Sequence[ModeResult]) -> str:
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in SUMMARY_COLUMNS)
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
        f"<b>steady</b> {_num(steady.calls_per_s, 0)} calls/s, "
        f"p99 {_num(steady.p99_ms, 2)} ms, {steady.failures:,} failed · "
        f"<b>scale-up {escape(scale_up.start)} → {escape(scale_up.end)}</b> "
        f"first call {escape(first)}, 80% fair share {escape(fair)} · "
        f"<b>rollout</b> {escape(_failed_of(mode.rollout)[0])} failed · "
        f"<b>scale-down</b> {escape(_failed_of(mode.scale_down)[0])} failed"
    )
    return f'<p class="facts">{facts}</p>'


def mode_section(index: int, mode: ModeResult, frames: Sequence[Frame]) -> str:
    charts = "\n".join(f"<figure>{chart_svg(mode, frame)}</figure>" for frame in frames)
    description = (
        f'<p class="description">{escape(mode.description)}</p>' if mode.description else ""
    )
    return (
        f'<section class="mode" id="mode-{index}">'
        f"<h2>{escape(mode.name)}</h2>{description}{_facts(mode)}\n{charts}</section>"
    )


# --- the page -----------------------------------------------------------------------


def render_html(results: LabResults) -> str:
    """The whole page for a lab run: summary table, then charts per mode."""
    modes = results.modes
    frames = [
        frame_for(modes, hop, height, show_failures=(i == 0))
        for i, (hop, height) in enumerate(HOPS)
    ]
    sections = "\n".join(mode_section(i, mode, frames) for i, mode in enumerate(modes))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(TITLE)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f'<h1>{escape(TITLE)}</h1>\n<p class="lede">{escape(LEDE)}</p>\n'
        f"{_settings(results.settings)}\n"
        f"{summary_table(modes)}\n"
        f'<p class="notes">{escape(NOTES)}</p>\n'
        f"{sections}\n</main>\n</body>\n</html>\n"
    )


def write_page(results: LabResults, path: Path) -> Path:
    """Write the page to ``path`` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")
    return path
