"""``shop health``: ask gRPC servers whether they are SERVING (grpc.health.v1.Health/Check).

This is the probe the container image ships: Docker's HEALTHCHECK and compose
healthchecks run it with no TARGET, which checks this container's own server at
SHOP_LISTEN_ADDR (a wildcard host such as 0.0.0.0 or [::] is asked on loopback);
the Helm test pod runs it against every Service. ``--service`` asks about one gRPC
service (e.g. shop.v1.Orders) instead of the whole server.

Each target is asked once, all of them at the same time, on a plain-text channel,
with no waiting for a connection: a probe reports how things are now.

Exit codes: 0 every target answered SERVING; 1 any did not (NOT_SERVING, UNKNOWN,
unreachable, no answer before --timeout, NOT_FOUND for a service the server does
not have); 2 bad flags or an invalid SHOP_LISTEN_ADDR.
"""

from __future__ import annotations

# It runs every few seconds in every container, so it loads only what it uses:
# grpc and the health stubs, not the runtime or the services behind the other
# commands (shop.runtime.config is loaded only when no TARGET is given).
import argparse
import ipaddress
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.cli.options import positive_float

DEFAULT_TIMEOUT_S = 2.0

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # A malformed DNS TXT record would otherwise fail the channel, not the server.
    ("grpc.service_config_disable_resolution", 1),
    # A probe checks the server itself; an http_proxy variable must not reroute it.
    ("grpc.enable_http_proxy", 0),
]


@dataclass(frozen=True)
class TargetHealth:
    """What one target said: a health status, or why the call failed."""

    target: str
    status: str | None  # SERVING, NOT_SERVING, UNKNOWN... when the call succeeded
    code: str  # gRPC status code of the call: OK, UNAVAILABLE, DEADLINE_EXCEEDED...
    error: str | None
    elapsed_s: float

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "serving": self.serving,
            "status": self.status,
            "code": self.code,
            "error": self.error,
            "elapsed_s": round(self.elapsed_s, 4),
        }


def local_target(listen_addr: str) -> str:
    """The address to reach a server listening on ``listen_addr`` from its own host.

    A server bound to a wildcard address (0.0.0.0, [::]) accepts connections on
    loopback, but a wildcard is not something a client can connect to.
    """
    host, _, port = listen_addr.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return listen_addr  # a host name: use it as it is
    if not ip.is_unspecified:
        return listen_addr
    return f"[::1]:{port}" if ip.version == 6 else f"127.0.0.1:{port}"


def _why(code: grpc.StatusCode, details: str, service: str, timeout_s: float) -> str:
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"unreachable: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout_s:g} s"
    if code == grpc.StatusCode.NOT_FOUND:
        return f"the server has no service named {service!r}"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "the server has no gRPC health service"
    return details or code.name


def _outcome(call: Any, service: str, timeout_s: float) -> tuple[str | None, str, str | None]:
    """(health status, gRPC code, why it failed) of a finished Check call."""
    try:
        reply = call.result()
    except grpc.RpcError as error:
        code = error.code()
        return None, code.name, _why(code, error.details() or "", service, timeout_s)
    status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return status, grpc.StatusCode.OK.name, None


def check_targets(targets: list[str], service: str, timeout_s: float) -> list[TargetHealth]:
    """Asks every target at once; the whole check takes at most about ``timeout_s``."""
    request = health_pb2.HealthCheckRequest(service=service)
    channels = [grpc.insecure_channel(target, options=CHANNEL_OPTIONS) for target in targets]
    started = time.monotonic()
    finished: dict[int, float] = {}
    try:
        calls = []
        for index, channel in enumerate(channels):
            call = health_pb2_grpc.HealthStub(channel).Check.future(request, timeout=timeout_s)
            call.add_done_callback(
                lambda _call, index=index: finished.setdefault(index, time.monotonic())
            )
            calls.append(call)
        results = []
        for index, (target, call) in enumerate(zip(targets, calls, strict=True)):
            status, code, why = _outcome(call, service, timeout_s)
            elapsed = finished.get(index, time.monotonic()) - started
            results.append(TargetHealth(target, status, code, why, elapsed))
        return results
    finally:
        for channel in channels:
            channel.close()


def _target(raw: str) -> str:
    if not raw.strip():
        raise argparse.ArgumentTypeError("a target cannot be empty")
    return raw.strip()


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health",
        help="gRPC health check of servers (the container's probe); exit 0 if all SERVING",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "targets",
        nargs="*",
        type=_target,
        metavar="TARGET",
        help="gRPC target: host:port, dns:///name:port... (default: this container's "
        "server, at SHOP_LISTEN_ADDR)",
    )
    parser.add_argument(
        "--service",
        default="",
        help="gRPC service to ask about, e.g. shop.v1.Orders (default: the whole server)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"deadline of each check (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    targets: list[str] = args.targets
    if not targets:
        from shop.runtime.config import LISTEN_ADDR, ConfigError

        try:
            targets = [local_target(LISTEN_ADDR.read(os.environ))]
        except ConfigError as error:
            print(f"shop health: configuration error: {error}", file=sys.stderr)
            return 2
    results = check_targets(targets, args.service, args.timeout)
    serving = all(result.serving for result in results)
    if args.json:
        report = {
            "serving": serving,
            "service": args.service,
            "timeout_s": args.timeout,
            "targets": [result.to_json() for result in results],
        }
        print(json.dumps(report, indent=2))
    else:
        width = max(len(result.target) for result in results)
        for result in results:
            outcome = result.status if result.error is None else f"{result.code}  {result.error}"
            print(f"{result.target:<{width}}  {outcome}")
    return 0 if serving else 1
