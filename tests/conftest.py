"""Fixtures shared by the whole suite: real databases and real local clusters.

Nothing here mocks gRPC: clusters are the same replica processes ``shop up`` runs,
each on its own loopback IP, and every process is stopped at teardown even when a
test fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import ClusterSpec, LocalCluster
from shop.local.postgres import PostgresServer, start_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # In CI a missing PostgreSQL is a failure, not a skip: start_postgres raises.
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each supported kind."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/shop.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Starts local clusters on a free loopback net; all are stopped at teardown."""
    started: list[LocalCluster] = []

    def start(
        gateway: int = 1, orders: int = 2, inventory: int = 2, **spec_args: Any
    ) -> LocalCluster:
        spec_args.setdefault("data_dir", tmp_path / f"cluster{len(started)}")
        spec_args.setdefault("plan", AddressPlan(net=free_net()))
        spec = ClusterSpec(
            replicas={"gateway": gateway, "orders": orders, "inventory": inventory}, **spec_args
        )
        cluster = LocalCluster(spec)
        started.append(cluster)
        cluster.start(timeout_s=90)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
