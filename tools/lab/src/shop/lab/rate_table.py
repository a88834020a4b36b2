"""The page's fixed-rate figures: how the rate was chosen, what the objective is, and
a row per mode of how it held the rate.

The closed-loop run lets each mode go as fast as it can, so a mode that stalls a pod
just runs slower; the fixed-rate run offers every mode the same calls per second and
counts latency from when each call was due, so stalls show as missed objectives.
These figures get a table of their own under the summary, one row per mode in the
same order: in the summary's row they would make it about twenty columns wide, too
wide to read a mode across.
"""

from __future__ import annotations

from collections.abc import Sequence

from shop.lab.cells import Cell, amount, num, table
from shop.lab.results import FixedRate, LabResults, ModeResult, OfferedRate, PodCpu, service_of
from shop.lab.svg import escape

# Services whose busiest pod the table shows: the balanced hops.
BUSIEST = ("orders", "inventory")

COLUMNS = (
    "mode",
    "offered calls/s",
    "not sent",
    "p50 / p99 ms",
    "within objective",
    "goodput calls/s",
    "timeouts / failed",
    *(f"busiest {service} pod: cores / limit · throttled" for service in BUSIEST),
)

NOTES = (
    "Fixed rate: an open-loop run at the same calls/s in every mode, latency counted "
    "from each call's intended send time. Not sent: calls the loader dropped at its "
    "in-flight cap (they count as missed). Within objective: share of the calls asked "
    "for that ended OK or FAILED_PRECONDITION within the objective; goodput: such calls "
    "per second. Failed: any other status, timeouts (DEADLINE_EXCEEDED) included. "
    "Busiest pod: the service's pod that used the most CPU in the run, its limit, and "
    "the share of CFS periods in which it was throttled."
)


# --- the sentence at the top --------------------------------------------------------


def _bound_by(results: LabResults, offered: OfferedRate) -> str:
    """What bounds the capacity: ``, what 2 orders pods at 0.25 core can take at 5.0 ms
    CPU per call``."""
    service = offered.bottleneck
    if service is None:
        return ""
    measured = [m for m in results.modes if m.name == offered.measured_in] or results.modes[:1]
    pods = [
        p
        for mode in measured
        for p in mode.steady.pods
        if service_of(p.pod) == service and p.limit_cores is not None
    ]
    levels = {p.limit_cores for p in pods}
    if len(levels) == 1:
        (limit,) = levels
        plural = "s" if len(pods) > 1 else ""
        who = f"{len(pods)} {service} pod{plural} at {limit:g} core"
    elif pods:
        total = sum(p.limit_cores or 0.0 for p in pods)
        who = f"the {service} pods ({total:g} cores of limits in all)"
    else:
        who = f"the {service} pods' CPU limits"
    ms = offered.cpu_ms_per_call.get(service)
    cost = "" if ms is None else f" at {ms:.1f} ms CPU per call"
    return f", what {who} can take{cost}"


def _rate_clause(results: LabResults) -> str | None:
    offered = results.offered
    if offered is None:
        rates = sorted({m.fixed_rate.rate for m in results.modes if m.fixed_rate})
        if not rates:
            return None
        listed = ", ".join(amount(r) for r in rates)
        return f"{listed} calls/s offered" + (" in every mode" if len(rates) == 1 else "")
    clause = f"{amount(offered.rate)} calls/s offered in every mode"
    if offered.capacity_per_s is None:
        return clause + ", the rate given (--rate), not one derived from a measured capacity"
    clause += (
        f" = {offered.load_factor:.0%} of {amount(offered.capacity_per_s)} calls/s"
        + _bound_by(results, offered)
    )
    if offered.measured_in:
        clause += f", measured in {offered.measured_in}'s closed-loop run"
    return clause


def _objectives(modes: Sequence[ModeResult]) -> list[float]:
    return sorted({m.fixed_rate.objective_ms for m in modes if m.fixed_rate})


def rate_sentence(results: LabResults) -> str | None:
    """How the fixed rate was chosen and what the objective is, as escaped HTML; None
    when no mode ran at a fixed rate and nothing was offered (an older lab.json)."""
    clause = _rate_clause(results)
    if clause is None:
        return None
    objectives = _objectives(results.modes)
    if not objectives:
        return escape(clause + ".")
    listed = " or ".join(f"{o:g} ms" for o in objectives)
    objective = (
        f" The objective: a call ends OK (or FAILED_PRECONDITION, a refusal, not a fault) "
        f"within {listed} of when it was due to be sent."
    )
    return escape(clause + "." + objective)


# --- the table ----------------------------------------------------------------------


def _busiest(pod: PodCpu | None) -> Cell:
    if pod is None:
        return "-", "", ""
    limit = "none" if pod.limit_cores is None else f"{pod.limit_cores:g}"
    text = f"{pod.cores:.2f} / {limit} · {pod.throttled_share:.0%}"
    tooltip = f"{pod.pod}: throttled {pod.throttled_s:.1f} s in all"
    return escape(text), "", tooltip


def _statuses(run: FixedRate) -> str:
    """Calls per status, the most frequent first: ``OK 597, DEADLINE_EXCEEDED 2``."""
    ranked = sorted(run.status_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{code} {n:,}" for code, n in ranked)


def _cells(index: int, mode: ModeResult) -> list[Cell]:
    name: Cell = (f'<a href="#mode-{index}">{escape(mode.name)}</a>', "", mode.description)
    run = mode.fixed_rate
    if run is None:
        return [name, ("not run", "never", ""), *[("-", "", "")] * (len(COLUMNS) - 2)]
    bad_failed = "bad" if run.failures or run.timeouts else ""
    return [
        name,
        (amount(run.rate), "", f"{run.calls:,} calls"),
        (f"{run.dropped:,}", "bad" if run.dropped else "", ""),
        (f"{num(run.p50_ms, 2)} / {num(run.p99_ms, 2)}", "", ""),
        (f"{run.within_objective:.1%}", "", f"within {run.objective_ms:g} ms"),
        (num(run.goodput_per_s, 1), "", ""),
        (f"{run.timeouts:,} / {run.failures:,}", bad_failed, _statuses(run)),
        *(_busiest(run.busiest(service)) for service in BUSIEST),
    ]


def rate_table(modes: Sequence[ModeResult]) -> str | None:
    """A row per mode; None when no mode ran at a fixed rate."""
    if not any(m.fixed_rate for m in modes):
        return None
    rows = [_cells(i, mode) for i, mode in enumerate(modes)]
    return table(COLUMNS, rows, "summary rates")
