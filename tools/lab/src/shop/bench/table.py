"""The tables ``shop bench`` prints for people (``--json`` is for scripts)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from shop.bench.breakdown import CpuBreakdown
from shop.bench.configs import System
from shop.bench.results import BenchReport, RatioResult
from shop.bench.stacks import Category

NOTES = (
    "Medians over rounds. spread: (highest - lowest calls/s) / 2, relative to the median.",
    "echo-bare: plain grpc.aio server. echo-runtime: the same Echo on the shop's runtime "
    "(interceptor, Prometheus metrics: always on), OTEL_SDK_DISABLED=true.",
    "chain-bare: gRPC's floor for the chain, three echo-bare servers in a row, the first "
    "two forwarding each call to the next (python -m shop.echo --bare --forward), loaded "
    "like echo-bare; its cpu us counts all three.",
    "chain: client -> gateway -> orders -> inventory, one replica each, SQLite. chain-pg: "
    "the same on a local PostgreSQL server (fsync off, as SQLite's WAL here does not sync "
    "on commit either), whose CPU counts in its cpu us.",
    "*-traced: every span exported over OTLP/gRPC to a sink in the bench process, "
    "which counted them (spans: received per call handled).",
    "cpu us: user + system CPU of the configuration's server processes per call they "
    "handled (front server's grpc_server_handled; echo-bare and chain-bare, which have no "
    "metrics: rate x (warm-up + window)).",
    "chain-fixed: the chain offered a fixed rate (open loop, --chain-rate), latency from "
    "each call's scheduled send; 'OK within': share of the calls asked for that ended OK "
    "within the objective (--chain-objective-ms). Its ratio to chain: calls/s is the "
    "share of the closed loop's capacity offered.",
)

BREAKDOWN_NOTES = (
    "CPU per call by category: the cpu us above (median over rounds), shared out by each "
    "process's and then each thread's measured CPU over the profiled rounds, then by the "
    "thread's py-spy samples (Python frames, 100/s, non-blocking; gRPC core's native "
    "threads by name). A sample goes to the outermost storage or telemetry frame in its "
    "stack, else to the innermost recognised frame (shop.bench.stacks).",
    "loop (event loop): the loop thread with no Python frame below the loop, which "
    "includes the native code uvloop runs there, gRPC's Cython aio layer among it: the "
    "gRPC figure is a lower bound. proto: protobuf and validation.",
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


def open_loop_lines(report: BenchReport) -> list[str]:
    """What the fixed-rate configurations were offered and how they held it."""
    lines = []
    for result in report.results.values():
        if not result.config.fixed_rate:
            continue
        within = result.within_objective
        share = "-" if within is None else f"{within * 100:.1f}%"
        lines.append(
            f"{result.config.key}: {_number(result.offered_calls_per_s, 0)} calls/s offered "
            f"(open loop), {result.calls:,} calls completed, {result.errors:,} errors, "
            f"{result.dropped:,} dropped; {share} OK within {_number(result.objective_ms, 0)} ms"
        )
    return lines


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


# Short headers: the breakdown table has to fit an 80-column terminal.
SHORT_TITLES = {
    Category.GRPC: "gRPC",
    Category.STORAGE: "storage",
    Category.TELEMETRY: "telem.",
    Category.PROTOBUF: "proto",
    Category.EVENT_LOOP: "loop",
    Category.REST: "rest",
}


def breakdown_table(breakdown: CpuBreakdown) -> Table:
    """CPU per call of one configuration, per process and category, in microseconds."""
    table = _table(f"{breakdown.config}: CPU per {breakdown.per} by category (us)")
    table.add_column("process", no_wrap=True)
    for category in Category:
        table.add_column(SHORT_TITLES[category], justify="right")
    unsampled = breakdown.unsampled_us >= 0.5
    for column in (*(["unsampled"] if unsampled else []), "total", "samples"):
        table.add_column(column, justify="right")

    def row(name: str, categories: dict[Category, float], other: float, total: float) -> list[str]:
        cells = [name, *(_number(categories[c], 0) for c in Category)]
        return [*cells, *([_number(other, 0)] if unsampled else []), _number(total, 0)]

    for process in breakdown.processes:
        table.add_row(
            *row(
                process.process,
                process.categories_us,
                process.unsampled_us,
                process.cpu_us_per_call,
            ),
            f"{process.samples:,}",
        )
    table.add_row(
        *row("total", breakdown.categories_us(), breakdown.unsampled_us, breakdown.cpu_us_per_call),
        f"{sum(p.samples for p in breakdown.processes):,}",
        style="bold",
    )
    return table


def breakdown_line(breakdown: CpuBreakdown) -> str:
    """The total in one line: 'CPU per PlaceOrder: gRPC x us, storage y us, ...'."""
    parts = [f"{c.title} {us:,.0f} us" for c, us in breakdown.categories_us().items()]
    if breakdown.unsampled_us >= 0.5:
        parts.append(f"unsampled {breakdown.unsampled_us:,.0f} us")
    return (
        f"{breakdown.config}: CPU per {breakdown.per}: {', '.join(parts)} "
        f"(total {breakdown.cpu_us_per_call:,.0f} us)"
    )


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
    if settings.get("profile_dir"):
        parts.append(f"profiled with py-spy into {settings['profile_dir']}")
    parts.append(
        f"Python {settings['python']}, grpcio {settings['grpcio']}, {settings['cpus']} CPUs, "
        f"uvloop {settings['uvloop']}, sampler {settings['otel_traces_sampler']}"
    )
    return "; ".join(parts)


def print_report(report: BenchReport, console: Console) -> None:
    console.print(results_table(report))
    for line in open_loop_lines(report):
        console.print(line)
    if report.ratios:
        console.print(ratios_table(report.ratios))
    spans = [f"{r.config.key} {r.spans:,}" for r in report.results.values() if r.spans is not None]
    if spans:
        console.print(f"spans received: {', '.join(spans)}")
    breakdowns = [r.breakdown for r in report.results.values() if r.breakdown is not None]
    for breakdown in breakdowns:
        console.print(breakdown_table(breakdown))
        console.print(breakdown_line(breakdown))
    console.print(settings_line(report), style="dim")
    for note in (*NOTES, *(BREAKDOWN_NOTES if breakdowns else ())):
        console.print(f"- {note}", style="dim")
