"""Starts and stops ``python -m shop.echo`` processes for the benchmark and its tests.

``LocalCluster`` runs the shop's own services; the echo server differs in that its
bare mode (and a bare hop's next hop) is chosen by command-line flags, so it gets
this small launcher. It keeps the cluster's conventions: one loopback IP per server
from the :class:`AddressPlan`, a log file per process, readiness through gRPC
health, and SIGTERM first, SIGKILL only for a process that outlives its budget.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from shop.local.addresses import AddressPlan, address_in_use
from shop.local.cluster import ClusterError, Replica, stop_replicas


def echo_env(plan: AddressPlan, index: int, pod: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SHOP_LISTEN_ADDR": plan.grpc_addr("echo", index),
            "SHOP_METRICS_ADDR": plan.metrics_addr("echo", index),
            "SHOP_POD_NAME": pod,
            "OTEL_SERVICE_NAME": "echo",
            # A benchmark server has no load balancer to wait for.
            "SHOP_DRAIN_DELAY_S": "0",
            "SHOP_SHUTDOWN_GRACE_S": "2",
            "GRPC_VERBOSITY": env.get("GRPC_VERBOSITY", "ERROR"),
        }
    )
    env.update(extra)
    return env


def start_echo(
    plan: AddressPlan,
    index: int,
    bare: bool,
    log_dir: Path,
    extra_env: Mapping[str, str],
    forward: str | None = None,
) -> Replica:
    """Starts echo server ``index`` of ``plan``; returns at once (see :func:`wait_serving`).

    ``forward`` (``host:port``, bare servers only): the server answers each call with
    that server's Echo (``--forward``), a hop of a bare chain.
    """
    if forward is not None and not bare:
        raise ValueError("only a bare echo server forwards")
    pod = f"echo-{index}"
    replica = Replica(
        "echo",
        index,
        plan.grpc_addr("echo", index),
        plan.metrics_addr("echo", index),
        log_dir / f"{pod}.log",
    )
    needed = [replica.grpc_addr] if bare else [replica.grpc_addr, replica.metrics_addr]
    for address in needed:
        problem = address_in_use(address)
        if problem:
            raise ClusterError(f"{problem} (needed by {pod})")
    command = [sys.executable, "-m", "shop.echo", *(["--bare"] if bare else [])]
    if forward is not None:
        command += ["--forward", forward]
    replica.spawn(command, echo_env(plan, index, pod, extra_env))
    return replica


def wait_serving(replica: Replica, timeout_s: float) -> None:
    """Returns once ``replica`` answers SERVING; raises with its log if it died or timed out."""
    replica.wait_serving(time.monotonic() + timeout_s)


def stop_echoes(replicas: Iterable[Replica], timeout_s: float = 10.0) -> dict[str, int | None]:
    """SIGTERM each (once: a second would skip the span flush), SIGKILL after ``timeout_s``."""
    return stop_replicas(list(replicas), timeout_s)
