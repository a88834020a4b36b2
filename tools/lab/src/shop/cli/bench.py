"""``shop bench``: what the runtime, tracing and the shop's hops cost, measured side by side.

Configurations (each server in its own process, the load from ``shop load`` in
another, keeping --concurrency calls in flight on one channel):

  echo-bare      Echo on a plain grpc.aio server (``python -m shop.echo --bare``)
  echo-runtime   Echo on the shop runtime, tracing off (Prometheus metrics stay on)
  echo-traced    the same with every span exported over OTLP to a sink in this process
  echo-sampled   the same with the chart's sampling: 10% of calls (parentbased_traceidratio)
  chain          gateway -> orders -> inventory (one replica each), tracing off
  chain-traced   the same with tracing on

They run interleaved in rounds (A B C D E F, A B C D E F, ...) and the report gives the
median of each and the ratios between them (the chain's against the bare hop's too),
so the figures hold on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from shop.bench.configs import CONFIG_KEYS, select
from shop.bench.loadrun import LoadError
from shop.bench.runner import BenchError, BenchSettings, run_bench
from shop.bench.table import print_report
from shop.cli.interrupts import stop_signals_interrupt
from shop.cli.options import bounded_int, non_negative_float, positive_float
from shop.local.cluster import ClusterError


def config_list(raw: str) -> list[str]:
    """``a,b`` -> ``[a, b]``, each one a known configuration."""
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [key for key in keys if key not in CONFIG_KEYS]
    if not keys or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown configuration {', '.join(unknown) or repr(raw)}: "
            f"choose from {', '.join(CONFIG_KEYS)}"
        )
    return keys


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="cost of the runtime, of tracing and of the shop's hops, measured side by side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--duration", type=positive_float, default=5.0, help="seconds measured per run (5)"
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_float,
        default=1.0,
        help="seconds of load before each measured window (1)",
    )
    parser.add_argument(
        "--rounds", type=bounded_int(1, 50), default=3, help="runs of each configuration (3)"
    )
    parser.add_argument(
        "--concurrency", type=bounded_int(1, 10_000), default=64, help="calls in flight (64)"
    )
    parser.add_argument(
        "--only",
        type=config_list,
        action="extend",
        metavar="CONFIG[,CONFIG]",
        help=f"measure only these configurations: {', '.join(CONFIG_KEYS)}",
    )
    parser.add_argument(
        "--chain-workload",
        choices=("place", "mix"),
        default="place",
        help="load on the chain: 'place' crosses all three hops on every call (default)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep replica logs and databases here (default: a temporary directory)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    return BenchSettings(
        configs=select(args.only),
        rounds=args.rounds,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        chain_workload=args.chain_workload,
        work_dir=args.data_dir,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every server the run started is stopped.
    try:
        with stop_signals_interrupt():
            report = run_bench(settings, show_progress=not args.no_progress)
    except (BenchError, LoadError, ClusterError) as error:
        print(f"shop bench: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, Console())
    return 0
