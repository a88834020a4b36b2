"""Fixtures shared by the whole suite: real databases, real local clusters, and
services run in-process by the runtime's own ``serve``.

Nothing here mocks gRPC: clusters are the same replica processes ``shop up`` runs,
each on its own loopback IP; in-process servers have the same interceptors, health
service and error mapping as a service process. Every process and server is
stopped at teardown even when a test fails. The helpers behind them (and those the
tests call themselves) are plain modules in tests/support.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shop.credentials import LocalCredentials, ensure_credentials
from shop.local.postgres import PostgresServer, start_postgres

from .support.clusters import ClusterFactory, local_clusters
from .support.pods import PodEnv, pod_environment
from .support.servers import StartServer, in_process_servers


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
        return f"sqlite:///{tmp_path}/shop.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> LocalCredentials:
    """A demo token issuer and internal keys, as shop up makes them."""
    return ensure_credentials(tmp_path_factory.mktemp("credentials"))


@pytest.fixture
def pod_env(tmp_path: Path, credentials: LocalCredentials) -> PodEnv:
    """``pod_env(**overrides)``: a service process's environment as a pod would get it
    (see ``pod_environment``), its data under this test's tmp_path."""

    def build(**overrides: str) -> dict[str, str]:
        return pod_environment(tmp_path / "data", credentials, **overrides)

    return build


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Starts local clusters on a free loopback net; all are stopped at teardown."""
    numbers = itertools.count()
    with local_clusters(lambda: tmp_path / f"cluster{next(numbers)}") as start:
        yield start


@pytest.fixture(scope="module")
def module_cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """``cluster_factory`` for a module-scoped cluster shared by one module's tests."""
    with local_clusters(lambda: tmp_path_factory.mktemp("cluster")) as start:
        yield start


@pytest.fixture
async def start_server(
    monkeypatch: pytest.MonkeyPatch, credentials: LocalCredentials
) -> AsyncIterator[StartServer]:
    """``await start_server(service, setup, **ServerConfig overrides)`` -> a SERVING server.

    It listens on a free loopback port unless ``listen_addr`` is given; its pod name
    is ``<service>-0`` unless ``pod_name`` is. At teardown every server is stopped
    through its ShutdownSignal, exactly as SIGTERM would, and must return cleanly.
    """
    # No collector in these tests; settings come from the environment as in a pod.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    # The session's demo issuer and internal keys (a test may override or remove them).
    for name, value in credentials.service_env().items():
        monkeypatch.setenv(name, value)
    async with in_process_servers() as start:
        yield start
