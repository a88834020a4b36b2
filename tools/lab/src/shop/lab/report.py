"""The lab's terminal table: one column per mode, one row per figure.

Modes as columns keep the table readable in an 80-column terminal (five modes fit,
eleven figures would not), and put the modes side by side, which is the point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich import box
from rich.console import Console
from rich.table import Table

from shop.lab import capacity
from shop.lab.results import FixedRate, LabResults, ModeCost, ModeResult, PhaseCalls


def seconds_or_never(value: float | None) -> str:
    """A wait as the tables show it: "never" when it did not end."""
    return "never" if value is None else f"{value:.1f} s"


def percent_shares(shares: Mapping[str, float]) -> str:
    """Pods' shares as whole percentages, in the pods' order: ``50 50``."""
    return " ".join(f"{round(share * 100):d}" for share in shares.values())


def _failed(phase: PhaseCalls) -> str:
    return f"{phase.failures} / {phase.calls}"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fixed(read: Callable[[FixedRate], str]) -> Callable[[ModeResult], str]:
    """A fixed-rate figure, "-" for a result without that run."""
    return lambda m: "-" if m.fixed_rate is None else read(m.fixed_rate)


def _busiest(fixed: FixedRate, service: str) -> str:
    """The busiest pod's CPU as a share of its limit, and how often it was throttled
    (kept short: five modes must fit an 80-column terminal)."""
    pod = fixed.busiest(service)
    if pod is None:
        return "-"
    used = f"{pod.cores:.2f}" if pod.limit_cores is None else f"{pod.cores / pod.limit_cores:.0%}"
    return f"{used}·{pod.throttled_share:.0%}"


def _cost(read: Callable[[ModeCost], str]) -> Callable[[ModeResult], str]:
    """A cost figure, "-" for a result without one (an older lab.json)."""
    return lambda m: "-" if m.steady.cost is None else read(m.steady.cost)


def _memory(cost: ModeCost) -> str:
    """Mean resident memory per proxy and how many ran: ``76x5``."""
    if cost.proxy_rss_mib is None:
        return "-"
    return f"{cost.proxy_rss_mib:.0f}x{cost.proxies}"


def _retries(m: ModeResult) -> str:
    return str(sum(m.retries.values()))


# (row label, how to read it from one mode's results)
ROWS: tuple[tuple[str, Callable[[ModeResult], str]], ...] = (
    ("orders share %", lambda m: percent_shares(m.steady.shares["orders"])),
    ("inventory share %", lambda m: percent_shares(m.steady.shares["inventory"])),
    ("imbalance (inv)", lambda m: f"{m.steady.imbalance['inventory']:.2f}"),
    ("closed calls/s", lambda m: f"{m.steady.calls_per_s:.0f}"),
    ("closed p50/p99 ms", lambda m: f"{m.steady.p50_ms:.0f}/{m.steady.p99_ms:.0f}"),
    ("CPU s/1k: apps", _cost(lambda c: _cpu(c.app_cpu_s_per_1000_calls))),
    ("CPU s/1k: proxies", _cost(lambda c: _cpu(c.proxy_cpu_s_per_1000_calls))),
    ("proxy RSS MiB", _cost(_memory)),
    (
        "mesh inv. share %",
        _cost(lambda c: percent_shares(c.proxy_shares.get("inventory", {})) or "-"),
    ),
    ("fixed p50/p99 ms", _fixed(lambda f: f"{f.p50_ms:.0f}/{f.p99_ms:.0f}")),
    ("fixed in objective", _fixed(lambda f: f"{f.within_objective:.1%}")),
    ("fixed goodput/s", _fixed(lambda f: f"{f.goodput_per_s:.0f}")),
    ("fixed failed (t/o)", _fixed(lambda f: f"{f.failures} ({f.timeouts})")),
    ("busiest orders pod", _fixed(lambda f: _busiest(f, "orders"))),
    ("busiest inv. pod", _fixed(lambda f: _busiest(f, "inventory"))),
    ("scale-up 1st call", lambda m: seconds_or_never(m.scale_up.first_traffic_s)),
    ("scale-up 80%", lambda m: seconds_or_never(m.scale_up.fair_share_s)),
    ("rollout failed", lambda m: _failed(m.rollout)),
    ("scale-down failed", lambda m: _failed(m.scale_down)),
    ("retried attempts", _retries),
    (
        "node client inv. %",
        lambda m: "-" if m.node_client is None else percent_shares(m.node_client.shares),
    ),
)


def print_table(results: LabResults, console: Console) -> None:
    table = Table(
        title="balancing lab: the same load in every mode",
        title_justify="left",
        box=box.SIMPLE_HEAD,  # no vertical rules: five modes fit in 80 columns
        show_edge=False,
    )
    table.add_column("", no_wrap=True)
    for mode in results.modes:
        # Headers may wrap at a hyphen (headless-/no-/maxage); figures never do.
        table.add_column(mode.name.replace("-", "-\n"), justify="right")
    for label, read in ROWS:
        table.add_row(label, *(read(mode) for mode in results.modes))
    console.print(table)
    if results.offered is not None:
        objective = float(results.settings.get("objective_ms", 0.0))
        console.print(
            "fixed rate: " + capacity.describe(results.offered, objective), highlight=False
        )
    for line in results.mesh_cost_lines():
        console.print(line, highlight=False)
    console.print(
        "share: % of calls per pod in steady state; imbalance: busiest pod's share / mean "
        "(1.00 even); CPU s/1k: CPU seconds per 1,000 calls in the closed loop, of the apps "
        "and of the mode's proxies (kube-proxy's stand-in, sidecars); proxy RSS: mean "
        "memory per proxy x proxies; mesh share: the inventory pods' shares as the "
        "sidecars counted them (Envoy's per-endpoint stats); closed: the closed loop; "
        "fixed: the open loop at the fixed rate, latency from the intended send time, "
        "failed calls (of which timeouts); busiest "
        "pod: at the fixed rate, its CPU as a share of its limit · the share of CFS periods "
        "in which it was throttled; scale-up: from the new pods being ready, to the "
        "timeline's bucket; failed: failed calls / calls in that phase; retried attempts: "
        "attempts the servers saw arrive as retries in the events run (failures a retry "
        "hid from the caller); node client: a Node.js client's (grpc-js) shares of its "
        "Health/Check calls over the inventory pods, through the mode's DNS or xDS.",
        highlight=False,
    )
