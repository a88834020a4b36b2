"""``shop load``: put load on a shop (or any Echo server) and report per-pod shares.

Default target is the gateway of a default ``shop up``. The client behaves like a
naive one unless told otherwise (one channel, pick_first), which is exactly the
setup that shows the per-connection balancing problem. ``--json`` prints the
summary object documented in :mod:`shop.loadgen.stats` to stdout.

Exit codes: 0 the run completed (whatever the call outcomes; they are in the
report), 1 the target was unreachable or cannot run the workload, 2 bad flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from shop.cli.options import bounded_int, non_negative_float, positive_float
from shop.credentials import DEFAULT_AUDIENCE, DEFAULT_ISSUER, TokenIssuer
from shop.loadgen.channels import LB_POLICIES, ConnectError
from shop.loadgen.progress import progress_wanted
from shop.loadgen.report import print_report
from shop.loadgen.runner import LoadPlan
from shop.loadgen.session import LoadOptions, run_async, run_load
from shop.loadgen.stats import Summary
from shop.loadgen.tokens import CustomerTokens, FixedToken, IssuedTokens
from shop.loadgen.workload import MIX_WEIGHTS, WORKLOADS, WorkloadError

DEFAULT_TARGET = "ipv4:127.10.1.1:50051"  # gateway-0 of a default `shop up`
# The demo issuer's key of a default `shop up` (its data dir is ./data).
DEFAULT_TOKEN_KEY = Path("data/credentials/issuer-key.pem")
DEFAULT_MAX_IN_FLIGHT = 1000


def expected_replicas(raw: str) -> tuple[str, int]:
    """``SERVICE=N`` for --expect."""
    service, sep, count = raw.partition("=")
    if not sep or not service.strip():
        raise argparse.ArgumentTypeError(f"expected SERVICE=N, got {raw!r}")
    return service.strip(), bounded_int(1, 10_000)(count)


def add_load_arguments(
    parser: argparse.ArgumentParser, *, duration_default: float, concurrency_default: int = 32
) -> None:
    """Flags shared by ``shop load`` and ``shop demo`` (everything but the target)."""
    mix = ", ".join(f"{method} {weight}%%" for method, weight in MIX_WEIGHTS.items())
    parser.add_argument(
        "--workload",
        choices=tuple(WORKLOADS),
        default="mix",
        help=f"what to call (default mix: {mix}); "
        + "; ".join(f"{name}: {cls.help}" for name, cls in WORKLOADS.items()),
    )
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument(
        "--concurrency",
        type=bounded_int(1, 10_000),
        default=concurrency_default,
        help=f"closed loop: calls kept in flight (default {concurrency_default})",
    )
    loop.add_argument(
        "--rps",
        type=positive_float,
        default=None,
        help="open loop: calls per second on a fixed schedule; latency counts from the "
        "intended send time",
    )
    parser.add_argument(
        "--max-in-flight",
        type=bounded_int(1, 100_000),
        default=None,
        help=f"open loop: cap on calls in flight; scheduled calls over it are dropped "
        f"(default {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=duration_default,
        help=f"measured seconds (default {duration_default:g})",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_float,
        default=1.0,
        help="seconds of load before measuring (default 1)",
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=5.0, help="per-call deadline, s (default 5)"
    )
    parser.add_argument(
        "--channels",
        type=bounded_int(1, 256),
        default=1,
        help="client channels (connections) the calls are spread over (default 1)",
    )
    parser.add_argument(
        "--lb-policy",
        choices=LB_POLICIES,
        default="pick_first",
        help="client load-balancing policy (default pick_first, like a naive client)",
    )
    parser.add_argument(
        "--objective-ms",
        type=positive_float,
        default=None,
        metavar="MS",
        help="a latency objective: report the share of calls that ended OK (or out of "
        "stock) within it, and that goodput per second",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--timeline",
        type=non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="with --json: per-pod calls in buckets of this many seconds (0 = off)",
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "load",
        help="load a running shop and report latency, status codes and per-pod shares",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"gRPC target: host:port, ipv4:a:p,b:p, dns:///name:port ... "
        f"(default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--expect",
        type=expected_replicas,
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="replicas a hop should spread over, so pods with no calls count in the "
        "imbalance (repeatable, e.g. --expect orders=3)",
    )
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--token-key",
        type=Path,
        metavar="PEM",
        help="the token issuer's private key: mint a bearer token per customer (default: "
        f"{DEFAULT_TOKEN_KEY}, which a default shop up writes, if it exists)",
    )
    auth.add_argument(
        "--token", metavar="JWT", help="one bearer token for every call (one customer)"
    )
    parser.add_argument(
        "--issuer",
        default=DEFAULT_ISSUER,
        help=f"with --token-key: the tokens' iss claim (default {DEFAULT_ISSUER})",
    )
    parser.add_argument(
        "--audience",
        default=DEFAULT_AUDIENCE,
        help=f"with --token-key: the tokens' aud claim (default {DEFAULT_AUDIENCE})",
    )
    add_load_arguments(parser, duration_default=10.0)
    parser.set_defaults(run=run, parser=parser)


def tokens_from_args(args: argparse.Namespace) -> CustomerTokens | None:
    """The customers' credentials the flags name; a bad key file is a flag error."""
    if getattr(args, "token", None):
        return FixedToken(args.token)
    key = getattr(args, "token_key", None)
    if key is None and DEFAULT_TOKEN_KEY.exists():
        key = DEFAULT_TOKEN_KEY
    if key is not None:
        try:
            return IssuedTokens(
                TokenIssuer.from_file(
                    key,
                    getattr(args, "issuer", DEFAULT_ISSUER),
                    getattr(args, "audience", DEFAULT_AUDIENCE),
                )
            )
        except ValueError as error:
            args.parser.error(f"argument --token-key: {error}")
    return None


def load_options(
    args: argparse.Namespace, target: str, expected_pods: Mapping[str, int]
) -> LoadOptions:
    """The LoadOptions for parsed flags; flag combinations argparse cannot check end here."""
    if args.max_in_flight is not None and args.rps is None:
        args.parser.error("argument --max-in-flight: only applies with --rps (open loop)")
    plan = LoadPlan(
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        rps=args.rps,
        max_in_flight=args.max_in_flight or DEFAULT_MAX_IN_FLIGHT,
    )
    return LoadOptions(
        target=target,
        plan=plan,
        workload=args.workload,
        channels=args.channels,
        lb_policy=args.lb_policy,
        timeout_s=args.timeout,
        expected_pods=expected_pods,
        progress=progress_wanted(args.no_progress),
        timeline_s=args.timeline,
        tokens=tokens_from_args(args),
        objective_ms=args.objective_ms,
    )


def emit(summary: Summary, as_json: bool, extra: Mapping[str, Any] | None = None) -> None:
    """Prints the summary: one JSON object, or the tables."""
    if as_json:
        print(json.dumps({**summary.to_json(), **(extra or {})}, indent=2))
    else:
        print_report(summary, Console())


def run(args: argparse.Namespace) -> int:
    options = load_options(args, args.target, dict(args.expect))
    try:
        summary = run_async(run_load(options))
    except (ConnectError, WorkloadError) as error:
        print(f"shop load: {error}", file=sys.stderr)
        return 1
    emit(summary, args.json)
    return 0
