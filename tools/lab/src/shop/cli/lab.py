"""``shop lab``: run the same load in every balancing mode and compare them.

Writes ``lab.json`` (every figure, every timeline) and ``lab.html`` (per-pod call
rate over time per mode, with the scale and rollout events marked) to ``--out``,
and prints a table. ``--mode`` (repeatable) runs a subset.

``--scenario slow-pod`` or ``--scenario failing-pod`` runs a scenario instead, where
one inventory pod is not like the others (see ``shop.lab.scenarios``), in every mode
it applies to, and writes ``<scenario>.json`` and ``<scenario>.html``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from rich.console import Console

from shop.cli.interrupts import stop_signals_interrupt
from shop.cli.options import bounded_float, bounded_int, non_negative_float, positive_float
from shop.cli.up import cpu_limit
from shop.lab.modes import DEFAULT_MODES, MODE_NAMES, MODES
from shop.lab.page import ScenarioLink, write_page
from shop.lab.report import print_table
from shop.lab.results import LabResults, Machine
from shop.lab.runner import Lab, LabSettings, Progress
from shop.lab.scenario_report import print_scenario_table, write_scenario_page
from shop.lab.scenarios import SCENARIO_NAMES, SCENARIOS, ScenarioLab, ScenarioSettings
from shop.loadgen.session import run_async
from shop.local.cgroups import (
    CHART_LIMITS,
    CgroupsUnavailable,
    PodCgroups,
    PodLimits,
    chart_limits,
)
from shop.local.postgres import PostgresUnavailable, find_binary

T = TypeVar("T")


def chart_cpu_limits() -> str:
    return ", ".join(f"{service} {limit.cpu_millis}m" for service, limit in CHART_LIMITS.items())


def _modes_help() -> str:
    width = max(len(name) for name in MODE_NAMES) + 2
    lines = [f"  {name:<{width}}{mode.description}" for name, mode in MODES.items()]
    scenarios = [
        f"  {name:<{width}}{s.question} (modes: {', '.join(s.modes)})"
        for name, s in SCENARIOS.items()
    ]
    return (
        "modes (--mode), named as the chart's mode values where they match:\n"
        + "\n".join(lines)
        + "\n\nscenarios (--scenario):\n"
        + "\n".join(scenarios)
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lab",
        help="measure every balancing mode side by side (share, rebalancing, rollout errors)",
        description=__doc__,
        epilog=_modes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        action="append",
        choices=MODE_NAMES,
        help="run only this mode (repeatable); default: "
        + ", ".join(DEFAULT_MODES)
        + " (with --scenario: the scenario's modes)",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIO_NAMES,
        default=None,
        help="run a scenario with one unlike inventory pod instead of the events run",
    )
    parser.add_argument(
        "--failing-run",
        type=positive_float,
        default=ScenarioSettings.failing_s,
        metavar="SECONDS",
        help="--scenario failing-pod: how long the load runs (default %(default)s)",
    )
    parser.add_argument("--orders", type=bounded_int(1, 8), default=2, help="orders replicas")
    parser.add_argument(
        "--inventory",
        type=bounded_int(1, 6),
        default=None,
        help="inventory replicas before scale-up (default 2; with --scenario, 3)",
    )
    parser.add_argument(
        "--scale-to", type=bounded_int(2, 8), default=4, help="inventory replicas after scale-up"
    )
    parser.add_argument(
        "--steady", type=positive_float, default=10.0, help="steady-state seconds per mode"
    )
    parser.add_argument(
        "--scale-window",
        type=positive_float,
        default=15.0,
        help="seconds watched after the scale-up for the new pods to get traffic",
    )
    parser.add_argument(
        "--concurrency", type=bounded_int(1, 256), default=16, help="calls in flight"
    )
    parser.add_argument(
        "--workload",
        choices=("place", "mix"),
        default="place",
        help="place: every call crosses gateway -> orders -> inventory (default); mix: a "
        "shop front-end's mix (see shop load --help)",
    )
    parser.add_argument(
        "--bucket", type=positive_float, default=0.5, help="timeline resolution, seconds"
    )
    parser.add_argument(
        "--min-ready",
        type=non_negative_float,
        default=LabSettings.min_ready_s,
        metavar="SECONDS",
        help="rollout: a restarted pod counts as available this long after it is ready, "
        "like a Deployment's minReadySeconds (default: the chart's, %(default)s)",
    )
    pods = parser.add_argument_group(
        "pods and database",
        "By default every pod runs in a cgroup with the chart's CPU and memory limits "
        "(needs root: cgroup v1 cpu, cpuacct and memory, or cgroup2 with cpu and memory), "
        "and the shop runs on a PostgreSQL server the lab starts, as the chart deploys it.",
    )
    pods.add_argument(
        "--no-limits",
        action="store_true",
        help="pods without CPU or memory limits (no root needed; one busy pod may then use "
        "the whole machine, so pinning costs nothing visible)",
    )
    pods.add_argument(
        "--cpu-limit",
        type=cpu_limit,
        action="append",
        default=[],
        metavar="SERVICE=QUANTITY",
        help="this CPU limit for a service instead of the chart's ("
        + chart_cpu_limits()
        + "), e.g. orders=500m; repeatable",
    )
    pods.add_argument(
        "--database",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="postgres: a database per mode on one server (default); sqlite: a file per "
        "service shared by its replicas, the embedded default of shop up",
    )
    rate = parser.add_argument_group(
        "fixed rate",
        "Besides the closed loop, every mode is offered the same calls/s, open loop (latency "
        "from each call's intended send time), and each call is judged by an objective.",
    )
    rate.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        help="calls/s offered in every mode (default: --load-factor of the capacity derived "
        "from the pods' CPU limits and the CPU per call measured in the first mode)",
    )
    rate.add_argument(
        "--load-factor",
        type=bounded_float(0.05, 2.0),
        default=LabSettings.load_factor,
        help="with no --rate, the share of the derived capacity offered (default %(default)s)",
    )
    rate.add_argument(
        "--objective-ms",
        type=positive_float,
        default=LabSettings.objective_ms,
        metavar="MS",
        help="latency objective: a call meets it if it ends OK within this (default %(default)s)",
    )
    rate.add_argument(
        "--deadline",
        type=positive_float,
        default=LabSettings.deadline_s,
        metavar="SECONDS",
        help="each fixed-rate call's deadline, as a caller sets one (default %(default)s)",
    )
    parser.add_argument("--out", default="results/lab", help="where lab.json and lab.html go")
    parser.add_argument("--json", action="store_true", help="print the results JSON to stdout")
    parser.set_defaults(run=run, parser=parser)


def _machine() -> Machine:
    return Machine(
        cpus=os.cpu_count(),
        python=platform.python_version(),
        grpcio=grpc.__version__,
        platform=platform.platform(),
    )


def _run_interruptibly(
    console: Console, work: Path, job: Callable[[Progress, Progress], Awaitable[T]]
) -> T | None:
    """``job(progress, announce)`` with a status line for its steps and lines printed for
    what it announces; None if it was interrupted. SIGTERM (e.g. from a CI runner) and
    SIGHUP stop it the way Ctrl-C does: every replica, proxy and server it started is
    stopped on the way out. The work folder goes either way."""

    def announce(line: str) -> None:
        console.print(line, highlight=False)

    async def main() -> T:
        with console.status("") as status:
            return await job(status.update, announce)

    try:
        with stop_signals_interrupt():
            return run_async(main())
    except KeyboardInterrupt:
        console.print("interrupted; every process was stopped")
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def limits_from_args(args: argparse.Namespace) -> dict[str, PodLimits] | None:
    if args.no_limits:
        if args.cpu_limit:
            args.parser.error("argument --cpu-limit: not allowed with --no-limits")
        return None
    return chart_limits(dict(args.cpu_limit))


def preflight(settings: LabSettings) -> str | None:
    """What the run needs and this machine lacks, said before anything starts."""
    if settings.limits is not None:
        try:
            PodCgroups.create("lab-check").close()
        except CgroupsUnavailable as error:
            return f"{error} (or pass --no-limits)"
    if settings.database == "postgres":
        try:
            find_binary("initdb")
        except PostgresUnavailable as error:
            return f"{error} (or pass --database sqlite)"
    return None


def run(args: argparse.Namespace) -> int:
    if args.inventory is None:
        args.inventory = 2 if args.scenario is None else 3
    if args.scenario is None and args.scale_to <= args.inventory:
        args.parser.error("argument --scale-to: must be larger than --inventory")
    if args.scenario is not None and args.inventory < 2:
        args.parser.error("argument --inventory: a scenario needs at least 2 inventory pods")
    if args.scenario == "slow-pod" and args.no_limits:
        # The slow pod is slow by its CPU limit: without cgroups there is nothing to cut.
        args.parser.error("argument --scenario: slow-pod needs pod CPU limits (not --no-limits)")
    from shop.lab.envoy import EnvoyError, envoy_binary
    from shop.lab.haproxy import HAProxyError, haproxy_binary

    default_modes = DEFAULT_MODES if args.scenario is None else SCENARIOS[args.scenario].modes
    modes = args.mode or list(default_modes)
    try:
        if any(MODES[m].needs_haproxy for m in modes):
            haproxy_binary()
        if any(MODES[m].needs_envoy for m in modes):
            envoy_binary()
    except (HAProxyError, EnvoyError) as error:
        print(f"shop lab: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shop-lab-"))
    settings = LabSettings(
        data_dir=work,
        orders=args.orders,
        inventory_start=args.inventory,
        inventory_scaled=args.scale_to,
        steady_s=args.steady,
        scale_window_s=args.scale_window,
        concurrency=args.concurrency,
        workload=args.workload,
        bucket_s=args.bucket,
        min_ready_s=args.min_ready,
        database=args.database,
        limits=limits_from_args(args),
        rate=args.rate,
        load_factor=args.load_factor,
        objective_ms=args.objective_ms,
        deadline_s=args.deadline,
    )
    problem = preflight(settings)
    if problem is not None:
        shutil.rmtree(work, ignore_errors=True)
        print(f"shop lab: {problem}", file=sys.stderr)
        return 1
    console = Console(stderr=True)
    if args.scenario is not None:
        scenario_settings = ScenarioSettings(settings, failing_s=args.failing_run)
        return _scenario(args, modes, scenario_settings, console, out, work)
    results = _run_interruptibly(
        console,
        work,
        lambda progress, announce: Lab(settings, progress, announce).run(modes, _machine()),
    )
    if results is None:
        return 130
    document = json.dumps(results.to_json(), indent=2)
    (out / "lab.json").write_text(document)
    written = [out / "lab.json", write_page(results, out / "lab.html", scenario_links(out))]
    if args.json:
        print(document)
    print_table(results, console)
    console.print("written: " + ", ".join(str(p) for p in written), highlight=False)
    return 0


def scenario_links(out: Path) -> list[ScenarioLink]:
    """The scenario pages in ``out``, in the scenarios' order."""
    return [
        ScenarioLink(f"{name}.html", scenario.title, scenario.question)
        for name, scenario in SCENARIOS.items()
        if (out / f"{name}.html").exists()
    ]


def _scenario(
    args: argparse.Namespace,
    modes: list[str],
    settings: ScenarioSettings,
    console: Console,
    out: Path,
    work: Path,
) -> int:
    scenario = SCENARIOS[args.scenario]
    results = _run_interruptibly(
        console,
        work,
        lambda progress, announce: ScenarioLab(settings, progress, announce).run_scenario(
            scenario, modes, _machine()
        ),
    )
    if results is None:
        return 130
    document = json.dumps(results.to_json(), indent=2)
    written = [out / f"{args.scenario}.json", out / f"{args.scenario}.html"]
    written[0].write_text(document)
    write_scenario_page(results, written[1])
    lab_json = out / "lab.json"
    if lab_json.exists():
        # The lab page links to every scenario page beside it: draw it again.
        lab = LabResults.from_json(json.loads(lab_json.read_text()))
        written.append(write_page(lab, out / "lab.html", scenario_links(out)))
    if args.json:
        print(document)
    print_scenario_table(results, console)
    console.print("written: " + ", ".join(str(p) for p in written), highlight=False)
    return 0
