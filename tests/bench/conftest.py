"""Processes for the benchmark tests, stopped at teardown even on failure: echo
servers, and whole ``shop bench`` runs with everything they started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from shop.bench.echo_process import start_echo, stop_echoes, wait_serving
from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import Replica

StartEchoServer = Callable[..., Replica]
RunBench = Callable[..., dict[str, Any]]

# A whole run, servers' start-up included, on a shared 2-core machine.
BENCH_TIMEOUT_S = 240
# How long a bench may take to stop what it started once told to (SIGTERM).
BENCH_STOP_S = 60


@pytest.fixture
def start_echo_server(tmp_path: Path) -> Iterator[StartEchoServer]:
    """``start(bare=..., env={...}, forward=None)`` runs ``python -m shop.echo`` (with
    ``--forward HOST:PORT`` when ``forward`` is given) and waits for SERVING."""
    plan = AddressPlan(net=free_net())
    started: list[Replica] = []

    def start(
        bare: bool, env: Mapping[str, str] | None = None, forward: str | None = None
    ) -> Replica:
        replica = start_echo(plan, len(started), bare, tmp_path / "logs", env or {}, forward)
        started.append(replica)
        wait_serving(replica, timeout_s=30)
        return replica

    try:
        yield start
    finally:
        stop_echoes(started)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the bench's replicas run in sessions of their own,
    so its process group does not hold them)."""
    tree = _children()
    found, pending = [], list(tree.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(tree.get(child, []))
    return found


def stop_bench(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the bench stops its servers and samplers, as on Ctrl-C), then SIGKILL
    whatever of it is left, the processes it started included."""
    if process.poll() is not None:
        return
    below = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=BENCH_STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
    for pid in below:
        with contextlib.suppress(ProcessLookupError):  # it stopped, as it should have
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run_bench(tmp_path: Path) -> Iterator[RunBench]:
    """``run(*flags)`` runs one short ``shop bench --json`` (1 round of 1 s unless the
    flags say otherwise) in its own process, asserts it succeeded, returns its report.
    A run that fails or hangs is stopped, with every process it started, at teardown."""
    started: list[subprocess.Popen[str]] = []

    def run(*flags: str) -> dict[str, Any]:
        command = [
            sys.executable, "-m", "shop.cli.main", "bench", "--duration", "1", "--warmup",
            "0.2", "--rounds", "1", "--json", "--no-progress", "--data-dir",
            str(tmp_path / f"bench-{len(started)}"), *flags,
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        started.append(process)
        stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT_S)
        assert process.returncode == 0, stderr
        document: dict[str, Any] = json.loads(stdout)
        return document

    try:
        yield run
    finally:
        for process in started:
            stop_bench(process)
