"""The human-readable report of a load run: a few rich tables.

The per-pod table is the one to read: for each hop it lists every pod that served
calls with its share, and the hop's imbalance (busiest share / mean share). Pods
that were expected but served nothing cannot appear in any trailer, so they are
shown as one "no calls" row when the expected replica count is known.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from shop.loadgen.stats import EXPECTED_CODES, Summary, shares

# Hops in request-path order; unknown services follow alphabetically.
HOP_ORDER = ("gateway", "orders", "inventory", "echo")


def hop_sort_key(service: str) -> tuple[int, str]:
    return (HOP_ORDER.index(service) if service in HOP_ORDER else len(HOP_ORDER), service)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def overview_table(summary: Summary) -> Table:
    info = summary.info
    table = Table(title="load run", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    shape = (
        f"closed loop, {info.concurrency} in flight"
        if info.mode == "closed"
        else f"open loop, {info.rps:g} calls/s scheduled"
    )
    table.add_row("workload", f"{info.workload} ({shape})")
    table.add_row("target", f"{info.target} ({info.lb_policy}, {plural(info.channels, 'channel')})")
    table.add_row("measured", f"{info.duration_s:g} s after {info.warmup_s:g} s warm-up")
    table.add_row("calls", f"{summary.calls} ({summary.calls_per_s:,.1f} calls/s)")
    errors = f"{summary.errors} ({summary.failures} unexpected)"
    table.add_row("errors", f"[red]{errors}[/red]" if summary.failures else errors)
    if info.mode == "open":
        table.add_row("dropped", f"{summary.dropped} (in-flight cap reached)")
    if summary.timeouts:
        table.add_row("timeouts", f"[red]{summary.timeouts}[/red] (DEADLINE_EXCEEDED)")
    within = summary.within_objective
    if within is not None:
        table.add_row(
            "objective",
            f"{100.0 * within:.1f}% of calls OK within {summary.objective_ms:g} ms "
            f"({summary.goodput_per_s:,.1f} good calls/s)",
        )
    return table


def latency_table(summary: Summary) -> Table:
    note = "from intended send time" if summary.info.mode == "open" else "send to completion"
    table = Table(title=f"latency, ms ({note})")
    for column in ("p50", "p90", "p99", "max"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{summary.latency_ms[key]:.2f}" for key in ("p50", "p90", "p99", "max")))
    return table


def status_table(summary: Summary) -> Table:
    table = Table(title="status codes")
    table.add_column("code")
    table.add_column("calls", justify="right")
    table.add_column("share", justify="right")
    for code, count in summary.status_counts.items():
        style = "" if code == "OK" else ("yellow" if code in EXPECTED_CODES else "red")
        table.add_row(code, str(count), _percent(count, summary.calls), style=style)
    return table


def per_pod_table(summary: Summary) -> Table:
    table = Table(
        title="per-pod share per hop",
        caption="imbalance = busiest pod's share / mean share (1.00 is even)",
    )
    for column, justify in (("hop", "left"), ("pod", "left"), ("calls", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("share", justify="right")
    table.add_column("imbalance", justify="right")
    imbalance = summary.imbalance()
    for service in sorted(summary.per_hop, key=hop_sort_key):
        pods = summary.per_hop[service]
        pod_shares = shares(pods)
        first = True
        for pod, count in pods.items():
            table.add_row(
                service if first else "",
                pod,
                str(count),
                f"{100.0 * pod_shares[pod]:.1f}%",
                f"{imbalance[service]:.2f}" if first else "",
            )
            first = False
        unseen = summary.expected_pods.get(service, 0) - len(pods)
        if unseen > 0:
            pods_text = plural(unseen, "more pod")
            table.add_row("", f"({pods_text}: no calls)", "0", "0.0%", "", style="red")
        table.add_section()
    return table


def print_report(summary: Summary, console: Console) -> None:
    console.print(overview_table(summary))
    console.print(latency_table(summary))
    console.print(status_table(summary))
    if summary.per_hop:
        console.print(per_pod_table(summary))
    else:
        console.print("no shop-route trailers received: per-pod share unknown")
