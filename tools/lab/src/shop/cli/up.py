"""``shop up``: start the shop on loopback and keep it running until Ctrl-C.

As a kubelet would, it restarts a replica that exits without being stopped, on the
same address, after a back-off that doubles with each restart (CrashLoopBackOff).
Ctrl-C (or SIGTERM) stops the shop once: one SIGTERM to each replica, front first,
each drains and exits 0. A second Ctrl-C during the drain is passed on, and the
replicas then exit at once without draining.

With ``--limits`` each pod runs in a cgroup with the chart's CPU and memory limits
(``--cpu-limit`` changes a service's CPU), enforced as the kubelet enforces them.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

from shop.cli.interrupts import STOP_SIGNALS, signals_handled_by
from shop.cli.options import add_cluster_arguments, positive_float
from shop.local.addresses import AddressPlan
from shop.local.cgroups import CHART_LIMITS, CgroupsUnavailable, PodLimits, chart_limits
from shop.local.cluster import ClusterError, ClusterSpec, LocalCluster, Replica, health_serving
from shop.local.prometheus import PrometheusServer, PrometheusUnavailable, start_prometheus
from shop.local.supervisor import Backoff, ReplicaExited, ReplicaRestarted, SupervisorEvent

DEFAULT_BACKOFF = Backoff()
# The chart's rule files (the compose stack loads the same ones), from a checkout's root.
DEFAULT_RULES_DIR = Path("helm/grpc-shop/rules")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up", help="start every replica on loopback; Ctrl-C stops them gracefully"
    )
    add_cluster_arguments(parser)
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a Prometheus (Debian package) scraping every replica, with the "
        "chart's recording rules and alerts loaded (see --rules)",
    )
    parser.add_argument(
        "--rules",
        type=Path,
        default=DEFAULT_RULES_DIR,
        metavar="DIR",
        help="the Prometheus rule files (*.yaml) to load with --prometheus: the chart's, "
        "relative to the repository root by default (default: %(default)s)",
    )
    limits = parser.add_argument_group(
        "limits",
        "Pods with the chart's resources.limits, enforced with a cgroup per pod as the "
        "kubelet does: a pod over its CPU quota is throttled until the next 100 ms "
        "period, one over its memory limit is OOM-killed (and restarted). Needs root "
        "(cgroup v1 cpu, cpuacct and memory, or cgroup2 with cpu and memory).",
    )
    limits.add_argument(
        "--limits",
        action="store_true",
        help="run each pod with the chart's CPU and memory limits ("
        + "; ".join(f"{service} {limit.describe()}" for service, limit in CHART_LIMITS.items())
        + ")",
    )
    limits.add_argument(
        "--cpu-limit",
        type=cpu_limit,
        action="append",
        default=[],
        metavar="SERVICE=QUANTITY",
        help="this CPU limit for a service instead of the chart's, e.g. orders=500m or "
        "gateway=1; repeatable; implies --limits",
    )
    restarts = parser.add_argument_group(
        "restarts",
        "A replica that exits without being stopped is started again on its address after "
        "a back-off that doubles with each restart, as the kubelet's CrashLoopBackOff does. "
        "The defaults are shorter than the kubelet's 10 s, 5 min and 10 min: locally a crash "
        "is mostly a kill or a bug being chased, and the replica should be back at once.",
    )
    restarts.add_argument(
        "--restart-backoff",
        type=positive_float,
        default=DEFAULT_BACKOFF.initial_s,
        metavar="SECONDS",
        help="wait before the first restart, doubled after each (default: %(default)s)",
    )
    restarts.add_argument(
        "--restart-backoff-max",
        type=positive_float,
        default=DEFAULT_BACKOFF.max_s,
        metavar="SECONDS",
        help="cap of that wait (default: %(default)s)",
    )
    restarts.add_argument(
        "--restart-reset-after",
        type=positive_float,
        default=DEFAULT_BACKOFF.reset_after_s,
        metavar="SECONDS",
        help="a replica that ran this long before it exited starts over at "
        "--restart-backoff (default: %(default)s)",
    )
    restarts.add_argument(
        "--no-restart",
        action="store_true",
        help="exit 1 when a replica exits instead of restarting it",
    )
    parser.set_defaults(run=run)


def cpu_limit(raw: str) -> tuple[str, int]:
    """``--cpu-limit SERVICE=QUANTITY`` -> (service, millicores)."""
    service, equals, quantity = raw.partition("=")
    if not equals or service not in CHART_LIMITS:
        raise argparse.ArgumentTypeError(
            f"expected SERVICE=QUANTITY with SERVICE one of {', '.join(CHART_LIMITS)}, got {raw!r}"
        )
    try:
        return service, PodLimits.parse_cpu(quantity)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def limits_from_args(args: argparse.Namespace) -> Mapping[str, PodLimits] | None:
    """The chart's limits with ``--cpu-limit`` applied; None without either flag."""
    if not args.limits and not args.cpu_limit:
        return None
    return chart_limits(dict(args.cpu_limit))


def rule_files(rules_dir: Path) -> list[Path]:
    """The rule files in ``--rules``; an installed command cannot know where a checkout
    is, so a directory without any is an error naming the flag, not an empty Prometheus."""
    # Absolute: Prometheus reads rule paths relative to its own config file's folder.
    files = sorted(path.resolve() for path in rules_dir.glob("*.yaml"))
    if not files:
        raise PrometheusUnavailable(
            f"--rules: no *.yaml rule files in {rules_dir} "
            "(run from the repository root, or pass the chart's rules directory)"
        )
    return files


def start_scraper(cluster: LocalCluster, workdir: Path, rules: list[Path]) -> PrometheusServer:
    return start_prometheus(workdir, cluster.metrics_targets(), rules)


def spec_from_args(
    args: argparse.Namespace, limits: Mapping[str, PodLimits] | None = None
) -> ClusterSpec:
    """The cluster the shared cluster flags describe (``shop up`` and ``shop demo``);
    ``limits`` from ``shop up``'s own flags (the demo's pods have none)."""
    return ClusterSpec(
        replicas={"gateway": args.gateway, "orders": args.orders, "inventory": args.inventory},
        plan=AddressPlan(
            net=args.net, grpc_port=args.base_port, metrics_port=args.base_port + 1000
        ),
        data_dir=Path(args.data_dir),
        database_url=args.database_url,
        limits=limits,
    )


def backoff_from_args(args: argparse.Namespace) -> Backoff | None:
    if args.no_restart:
        return None
    return Backoff(args.restart_backoff, args.restart_backoff_max, args.restart_reset_after)


def print_replicas(console: Console, cluster: LocalCluster) -> None:
    table = Table(title="grpc-shop replicas")
    limits = cluster.spec.limits
    for column in ("pod", "gRPC", "metrics", "pid", "restarts", *(["limits"] if limits else [])):
        table.add_column(column)
    for replica in cluster.replicas:
        pid = str(replica.process.pid) if replica.process else "-"
        row = [
            replica.pod,
            replica.grpc_addr,
            f"http://{replica.metrics_addr}/metrics",
            pid,
            str(replica.restarts),
        ]
        if limits:
            limit = limits.get(replica.service)
            row.append(limit.describe() if limit else "none")
        table.add_row(*row)
    console.print(table)


def report_restart(console: Console, event: SupervisorEvent) -> None:
    if isinstance(event, ReplicaExited):
        pid = f" (pid {event.pid})" if event.pid is not None else ""
        console.print(
            f"[red]{event.pod}{pid} exited unexpectedly: {event.reason}; "
            f"restart #{event.restarts + 1} in {event.delay_s:.1f} s[/red]",
            highlight=False,
        )
    else:
        console.print(
            f"{event.replica.pod} restarted: pid {event.pid}, restarts {event.restarts}; "
            "waiting for SERVING",
            highlight=False,
        )


def watch(
    console: Console,
    cluster: LocalCluster,
    stop: threading.Event,
    restarted: queue.SimpleQueue[Replica],
) -> int | None:
    """Until ``stop``: reports replicas the supervisor ``restarted`` once they are
    SERVING again; without restarts, returns 1 at the first replica that exits."""
    awaiting: dict[str, Replica] = {}
    while not stop.wait(0.5):
        if cluster.supervisor is None:
            dead = [r.pod for r in cluster.replicas if not r.alive()]
            if dead:
                console.print(f"[red]replica exited unexpectedly: {', '.join(dead)}[/red]")
                return 1
        with contextlib.suppress(queue.Empty):
            while True:
                replica = restarted.get_nowait()
                awaiting[replica.pod] = replica
        for pod, replica in list(awaiting.items()):
            if replica.alive() and health_serving(replica.grpc_addr, timeout_s=0.5):
                del awaiting[pod]
                console.print(f"[green]{pod} SERVING again on {replica.grpc_addr}[/green]")
                print_replicas(console, cluster)
    return None


@contextlib.contextmanager
def second_signal_skips_drain(console: Console, cluster: LocalCluster) -> Iterator[None]:
    """While the replicas drain, a second Ctrl-C (or SIGTERM) is passed on to them as
    a second SIGTERM, on which the runtime exits at once: the way out for an operator
    who will not wait, without a traceback here or replicas left behind."""

    def skip_drain(signum: int, frame: FrameType | None) -> None:
        console.print("[yellow]second signal: replicas exit without draining[/yellow]")
        for replica in list(cluster.replicas):
            cluster.signal_replica(replica)

    with signals_handled_by((signal.SIGINT, signal.SIGTERM), skip_drain):
        yield


def report_stop(console: Console, codes: dict[str, int | None], down: set[str]) -> None:
    """One line on how the replicas stopped; ``down``: replicas that were waiting for a
    restart, whose (crash) exit code is no news."""
    failed = {pod: code for pod, code in codes.items() if code != 0 and pod not in down}
    if failed:
        detail = ", ".join(
            f"{pod}={'killed after the grace period' if code is None else code}"
            for pod, code in failed.items()
        )
        console.print(f"[yellow]non-zero exits: {detail}[/yellow]", highlight=False)
    if down:
        console.print(f"not running when stopped: {', '.join(sorted(down))}")
    clean = sum(code == 0 for code in codes.values())
    console.print(f"stopped: {clean} of {len(codes)} replicas exited 0 after draining")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        backoff = backoff_from_args(args)
    except ValueError as error:
        print(f"shop up: {error}", file=sys.stderr)
        return 2
    try:
        rules = rule_files(args.rules) if args.prometheus else []
    except PrometheusUnavailable as error:
        print(f"shop up: {error}", file=sys.stderr)
        return 2
    # The supervisor reports from its thread; SERVING again is checked here.
    restarted: queue.SimpleQueue[Replica] = queue.SimpleQueue()

    def on_restart(event: SupervisorEvent) -> None:
        report_restart(console, event)
        if isinstance(event, ReplicaRestarted):
            restarted.put(event.replica)

    cluster = LocalCluster(
        spec_from_args(args, limits_from_args(args)), restart=backoff, on_restart=on_restart
    )
    stop = threading.Event()
    # SIGHUP too: the replicas are in sessions of their own, so a closed terminal's
    # hangup reaches only this process, which must then stop them rather than die.
    with signals_handled_by(STOP_SIGNALS, lambda *_: stop.set()):
        return run_until_stopped(console, cluster, args, rules, stop, restarted)


def run_until_stopped(
    console: Console,
    cluster: LocalCluster,
    args: argparse.Namespace,
    rules: list[Path],
    stop: threading.Event,
    restarted: queue.SimpleQueue[Replica],
) -> int:
    """Starts the shop, watches it until ``stop`` (or Ctrl-C), then stops it gracefully."""
    prometheus: PrometheusServer | None = None
    try:
        with console.status("starting replicas and waiting for SERVING..."):
            cluster.start()
        print_replicas(console, cluster)
        console.print(f"gateway target: [bold]{cluster.gateway_target}[/bold]")
        console.print(f"logs: {cluster.log_dir}")
        if args.prometheus:
            with console.status("starting Prometheus..."):
                prometheus = start_scraper(cluster, Path(args.data_dir) / "prometheus", rules)
            console.print(f"prometheus: [bold]{prometheus.url}[/bold]")
        console.print("Ctrl-C stops every replica gracefully.")
        return watch(console, cluster, stop, restarted) or 0
    except (ClusterError, PrometheusUnavailable) as error:
        print(f"shop up: {error}", file=sys.stderr)
        return 1
    except CgroupsUnavailable as error:
        print(f"shop up: --limits: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # Before anything else: a second Ctrl-C from here on must not abort the stop
        # and leave replicas (in sessions of their own) running.
        with second_signal_skips_drain(console, cluster):
            if prometheus is not None:
                prometheus.stop()
            down = {r.pod for r in cluster.replicas if not r.alive()}
            with console.status("stopping (drain, then graceful stop)..."):
                codes = cluster.stop()
        if codes:  # nothing to report when nothing started (a failed preflight)
            report_stop(console, codes, down)
