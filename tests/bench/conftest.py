"""Echo server processes for the benchmark tests, stopped at teardown even on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from shop.bench.echo_process import start_echo, stop_echoes, wait_serving
from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import Replica

StartEchoServer = Callable[..., Replica]


@pytest.fixture
def start_echo_server(tmp_path: Path) -> Iterator[StartEchoServer]:
    """``start(bare=..., env={...})`` runs ``python -m shop.echo`` and waits for SERVING."""
    plan = AddressPlan(net=free_net())
    started: list[Replica] = []

    def start(bare: bool, env: Mapping[str, str] | None = None) -> Replica:
        replica = start_echo(plan, len(started), bare, tmp_path / "logs", env or {})
        started.append(replica)
        wait_serving(replica, timeout_s=30)
        return replica

    try:
        yield start
    finally:
        stop_echoes(started)
