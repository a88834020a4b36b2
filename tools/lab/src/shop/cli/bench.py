"""``shop bench``: what the runtime, tracing and the shop's hops cost, measured side by side.

Configurations (each server in its own process, the load from ``shop load`` in
another, keeping --concurrency calls in flight on one channel):

  echo-bare      Echo on a plain grpc.aio server (``python -m shop.echo --bare``)
  echo-runtime   Echo on the shop runtime, tracing off (Prometheus metrics stay on)
  echo-traced    the same with every span exported over OTLP to a sink in this process
  echo-unsampled the same with tracing on and no call sampled (parentbased_traceidratio
                 at 0): what an unsampled call's decision and current span cost
  echo-sampled   the same with the chart's sampling: 10% of calls (parentbased_traceidratio)
  chain-bare     gRPC's floor for a three-hop chain: three bare Echo servers in a row, the
                 first two forwarding each call to the next (``python -m shop.echo --bare
                 --forward HOST:PORT``), loaded like echo-bare
  chain          gateway -> orders -> inventory (one replica each), tracing off
  chain-traced   the same with tracing on
  chain-fixed    the chain offered a fixed rate, open loop (--chain-rate, default 100
                 calls/s, half of the ~200 the chain managed closed loop on a 2-core
                 machine with the SQLAlchemy storage): latency without the queue,
                 comparable across runs (and code changes) at the same rate
  chain-pg       the chain on a local PostgreSQL server the bench starts (its CPU
                 counts in the chain's CPU per call)

They run interleaved in rounds (A B C ... J, A B C ... J, ...) and the report gives
the median of each and the ratios between them (the chain's against the bare hop's
and the bare three-hop chain's too: chain/bare 3-hop chain is what the shop's runtime,
storage and saga add over gRPC's floor; bare 3-hop chain/bare echo the best chain/bare
echo ratio gRPC allows on the machine), so the figures hold on a shared machine.

--profile DIR samples every process of the SQLite chains (chain, chain-traced,
chain-fixed; not chain-bare or chain-pg) with py-spy while it is measured, writes a
flame graph per configuration and process into DIR (with the raw stacks and the
report as bench.json), and splits the chain's CPU per call into gRPC, storage,
telemetry, protobuf/validation, event loop and the rest (needs py-spy, and the right
to read other processes: root or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from shop.bench.configs import (
    CONFIG_KEYS,
    DEFAULT_CHAIN_OBJECTIVE_MS,
    DEFAULT_CHAIN_RATE,
    select,
)
from shop.bench.loadrun import LoadError
from shop.bench.profile import INSTALL_HINT, ProfileError, find_py_spy
from shop.bench.runner import BenchError, BenchSettings, profiled, run_bench
from shop.bench.table import print_report
from shop.cli.interrupts import stop_signals_interrupt
from shop.cli.options import bounded_float, bounded_int, non_negative_float, positive_float
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
        "--chain-rate",
        type=bounded_float(1, 10_000),
        default=DEFAULT_CHAIN_RATE,
        metavar="CALLS_PER_S",
        help=f"calls/s offered to chain-fixed, open loop (default {DEFAULT_CHAIN_RATE:g}, half "
        "the chain's closed-loop capacity on a 2-core machine before the storage rewrite; keep "
        "it the same to compare runs)",
    )
    parser.add_argument(
        "--chain-objective-ms",
        type=positive_float,
        default=DEFAULT_CHAIN_OBJECTIVE_MS,
        metavar="MS",
        help="latency objective chain-fixed's calls are judged by "
        f"({DEFAULT_CHAIN_OBJECTIVE_MS:g})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the SQLite chains' processes with py-spy: flame graphs into DIR and the "
        "CPU per call split into gRPC, storage, telemetry, protobuf, event loop and the rest",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep replica logs and databases here (default: a temporary directory)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run, parser=parser)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The settings the flags ask for; combinations argparse cannot check end here."""
    configs = select(args.only)
    py_spy = None
    if args.profile is not None:
        if not any(profiled(config) for config in configs):
            args.parser.error(
                "argument --profile: it samples the SQLite chains' processes, and none is "
                "selected (add chain, chain-traced or chain-fixed to --only; chain-bare and "
                "chain-pg are not profiled)"
            )
        if args.profile.exists() and not args.profile.is_dir():
            args.parser.error(f"argument --profile: {args.profile} exists and is no directory")
        py_spy = find_py_spy()
        if py_spy is None:
            args.parser.error(
                f"argument --profile: needs py-spy, which is not installed: {INSTALL_HINT}"
            )
    return BenchSettings(
        configs=configs,
        rounds=args.rounds,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        chain_workload=args.chain_workload,
        work_dir=args.data_dir,
        chain_rate=args.chain_rate,
        chain_objective_ms=args.chain_objective_ms,
        profile_dir=args.profile,
        py_spy=py_spy,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every server the run started is stopped.
    try:
        with stop_signals_interrupt():
            report = run_bench(settings, show_progress=not args.no_progress)
    except (BenchError, LoadError, ClusterError, ProfileError) as error:
        print(f"shop bench: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, Console())
    return 0
