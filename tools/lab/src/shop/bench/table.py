"""The tables ``shop bench`` prints for people (``--json`` is for scripts)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from shop.bench.configs import System
from shop.bench.results import BenchReport, RatioResult

NOTES = (
    "Medians over rounds. spread: (highest - lowest calls/s) / 2, relative to the median.",
    "echo-bare: plain grpc.aio server. echo-runtime: the same Echo on the shop's runtime "
    "(interceptor, Prometheus metrics: always on), OTEL_SDK_DISABLED=true.",
    "chain: client -> gateway -> orders -> inventory, one replica each, SQLite.",
    "*-traced: every span exported over OTLP/gRPC to a sink in the bench process, "
    "which counted them (spans: received per call handled).",
    "cpu us: user + system CPU of the configuration's server processes per call they "
    "handled (front server's grpc_server_handled; echo-bare: rate x (warm-up + window)).",
)


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ({(value - 1) * 100:+.0f}%)"


def _spread(low: float, high: float, median: float | None) -> str:
    if not median:
        return "-"
    return f"±{(high - low) / 2 / median * 100:.0f}%"


def _table(title: str) -> Table:
    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)


def results_table(report: BenchReport) -> Table:
    table = _table("shop bench (latency in ms)")
    table.add_column("config", no_wrap=True)
    for column in ("calls/s", "spread", "p50", "p99", "cpu us", "errors", "spans"):
        table.add_column(column, justify="right")
    for result in report.results.values():
        low, high = result.calls_per_s_range
        rate = result.median("calls_per_s")
        table.add_row(
            result.config.key,
            _number(rate, 0),
            _spread(low, high, rate),
            _number(result.median("p50_ms"), 2),
            _number(result.median("p99_ms"), 2),
            _number(result.median("server_cpu_us_per_call"), 0),
            f"{result.errors:,}",
            _number(result.spans_per_call, 2),
        )
    return table


def ratios_table(ratios: list[RatioResult]) -> Table:
    table = _table("ratios of the medians")
    table.add_column("comparison", no_wrap=True)
    for column in ("calls/s", "p50", "p99", "cpu/call"):
        table.add_column(column, justify="right")
    for ratio in ratios:
        values = ratio.values
        table.add_row(
            ratio.title,
            _ratio(values["calls_per_s"]),
            _ratio(values["p50_ms"]),
            _ratio(values["p99_ms"]),
            _ratio(values["server_cpu_us_per_call"]),
        )
    return table


def settings_line(report: BenchReport) -> str:
    """How the figures were taken, in one paragraph under the tables."""
    settings = report.settings
    parts = [
        f"{settings['rounds']} round(s) x {settings['duration_s']:g}s "
        f"(+{settings['warmup_s']:g}s warm-up), {settings['concurrency']} calls in flight "
        "on one channel"
    ]
    if any(result.config.system is System.CHAIN for result in report.results.values()):
        replicas = ", ".join(f"{name} x{n}" for name, n in settings["chain_replicas"].items())
        parts.append(f"chain workload '{settings['chain_workload']}' on {replicas}")
    parts.append(
        f"Python {settings['python']}, grpcio {settings['grpcio']}, {settings['cpus']} CPUs, "
        f"uvloop {settings['uvloop']}, sampler {settings['otel_traces_sampler']}"
    )
    return "; ".join(parts)


def print_report(report: BenchReport, console: Console) -> None:
    console.print(results_table(report))
    if report.ratios:
        console.print(ratios_table(report.ratios))
    spans = [f"{r.config.key} {r.spans:,}" for r in report.results.values() if r.spans is not None]
    if spans:
        console.print(f"spans received: {', '.join(spans)}")
    console.print(settings_line(report), style="dim")
    for note in NOTES:
        console.print(f"- {note}", style="dim")
