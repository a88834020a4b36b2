"""Starts and stops ``python -m shop.echo`` processes for the benchmark and its tests.

``LocalCluster`` runs the shop's own services; the echo server differs in that its
bare mode is chosen by a command-line flag, so it gets this small launcher. It
keeps the cluster's conventions: one loopback IP per server from the
:class:`AddressPlan`, a log file per process, readiness through gRPC health, and
SIGTERM first, SIGKILL only for a process that outlives its budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from shop.local.addresses import AddressPlan, address_in_use
from shop.local.cluster import ClusterError, Replica, health_serving


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
    plan: AddressPlan, index: int, bare: bool, log_dir: Path, extra_env: Mapping[str, str]
) -> Replica:
    """Starts echo server ``index`` of ``plan``; returns at once (see :func:`wait_serving`)."""
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
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "shop.echo", *(["--bare"] if bare else [])]
    with replica.log_path.open("ab") as log:
        replica.process = subprocess.Popen(
            command,
            env=echo_env(plan, index, pod, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return replica


def wait_serving(replica: Replica, timeout_s: float) -> None:
    """Returns once ``replica`` answers SERVING; raises with its log if it died or timed out."""
    deadline = time.monotonic() + timeout_s
    while not health_serving(replica.grpc_addr, timeout_s=1.0):
        if not replica.alive():
            raise ClusterError(f"{replica.pod} exited during start-up:\n{replica.log_tail()}")
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{replica.pod} not SERVING after {timeout_s:.0f}s:\n{replica.log_tail()}"
            )
        time.sleep(0.05)


def stop_echoes(replicas: Iterable[Replica], timeout_s: float = 10.0) -> dict[str, int | None]:
    """One SIGTERM each (a second would skip the span flush), then SIGKILL after ``timeout_s``.

    Returns each server's exit code, None for one that had to be killed.
    """
    running = [r for r in replicas if r.process is not None]
    for replica in running:
        assert replica.process is not None
        if replica.process.poll() is None:
            replica.process.terminate()
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int | None] = {}
    for replica in running:
        assert replica.process is not None
        try:
            codes[replica.pod] = replica.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()
            codes[replica.pod] = None
    return codes
