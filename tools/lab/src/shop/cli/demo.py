"""``shop demo``: start a local shop, load it, show the per-pod shares, stop it.

This is what ``make demo`` runs on a fresh machine, so it owns the whole life cycle:
a fresh data directory (unless --data-dir), replicas started and checked SERVING,
the same load run as ``shop load``, a report, and every replica stopped again, also
after an error or Ctrl-C. Exit code 1 when any call failed with a status other than
OK or the expected business outcome (FAILED_PRECONDITION: out of stock), so the
demo doubles as a smoke test.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from shop.cli.interrupts import stop_signals_interrupt
from shop.cli.load import add_load_arguments, emit, load_options
from shop.cli.options import add_cluster_arguments
from shop.cli.up import spec_from_args
from shop.loadgen.channels import ConnectError
from shop.loadgen.report import plural
from shop.loadgen.session import run_async, run_load
from shop.loadgen.stats import Summary
from shop.loadgen.tokens import IssuedTokens
from shop.loadgen.workload import WorkloadError
from shop.local.cluster import ClusterError, LocalCluster


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start a local shop, load it, print per-pod shares, stop it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cluster_arguments(parser)
    # The demo shows shares, not peak throughput: 8 calls in flight already keep a
    # local SQLite-backed shop busy on 2 cores, while 32 queue behind its write locks
    # into multi-second tails (and deadline errors on a loaded machine).
    add_load_arguments(parser, duration_default=15.0, concurrency_default=8)
    # A demo starts from an empty shop: a fresh temporary directory unless told otherwise.
    parser.set_defaults(run=run, parser=parser, data_dir=None)


def explain(summary: Summary, console: Console) -> None:
    """One or two lines on how to read the per-pod table."""
    console.print(
        "Inside the shop, gateway -> orders and orders -> inventory use round_robin over "
        "every replica address, so the orders and inventory shares above should be even "
        "(imbalance close to 1.0).",
        highlight=False,
    )
    info = summary.info
    console.print(
        f"This client reached the gateway with {info.lb_policy} over "
        f"{plural(info.channels, 'channel')}; a pick_first client behind a Kubernetes "
        "ClusterIP Service sends every call to one pod: the problem the balancing modes solve.",
        highlight=False,
    )


def run(args: argparse.Namespace) -> int:
    # Validate the load flags before anything starts; the target is known later.
    options = load_options(args, "", {})
    temporary = args.data_dir is None
    if temporary:
        args.data_dir = tempfile.mkdtemp(prefix="shop-demo-")
    spec = spec_from_args(args)
    cluster = LocalCluster(spec)
    console = Console(stderr=True)
    succeeded = False
    # SIGTERM (e.g. from a CI runner) and SIGHUP stop the demo the way Ctrl-C does.
    try:
        with stop_signals_interrupt():
            with console.status("starting replicas and waiting for SERVING..."):
                cluster.start()
            replicas = ", ".join(f"{service} x{n}" for service, n in spec.replicas.items())
            console.print(f"shop is up ({replicas}) at {cluster.gateway_target}", highlight=False)
            options = dataclasses.replace(
                options,
                target=cluster.gateway_target,
                expected_pods=dict(spec.replicas),
                tokens=IssuedTokens(cluster.credentials.issuer()),
            )
            summary = run_async(run_load(options))
            emit(summary, args.json, {"replicas": dict(spec.replicas)})
            if not args.json:
                explain(summary, Console())
            succeeded = summary.calls > 0 and summary.failures == 0
            if not succeeded:
                console.print(
                    f"[red]demo failed: {summary.failures} unexpected error(s) "
                    f"in {summary.calls} calls[/red]"
                )
            return 0 if succeeded else 1
    except (ClusterError, ConnectError, WorkloadError) as error:
        print(f"shop demo: {error}", file=sys.stderr)
        return 1
    finally:
        with console.status("stopping replicas (drain, then graceful stop)..."):
            cluster.stop()
        if temporary:
            keep_logs(Path(args.data_dir), succeeded, console)


def keep_logs(data_dir: Path, succeeded: bool, console: Console) -> None:
    """Removes the demo's own data directory unless its replica logs can explain a failure."""
    logs = data_dir / "logs"
    if not succeeded and any(logs.glob("*.log")):
        console.print(f"replica logs kept in {logs}", highlight=False)
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
