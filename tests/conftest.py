"""Fixtures shared by the whole suite: real databases, real local clusters, and
services run in-process by the runtime's own ``serve``.

Nothing here mocks gRPC: clusters are the same replica processes ``shop up`` runs,
each on its own loopback IP; in-process servers have the same interceptors, health
service and error mapping as a service process. Every process and server is
stopped at teardown even when a test fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.credentials import LocalCredentials, ensure_credentials
from shop.local.addresses import AddressPlan, free_net, free_port
from shop.local.cluster import ClusterSpec, LocalCluster
from shop.local.postgres import PostgresServer, start_postgres
from shop.runtime.auth.internal import CALLER_TOKEN_HEADER
from shop.runtime.config import ServerConfig
from shop.runtime.server import ServiceSetup, serve
from shop.runtime.shutdown import ShutdownSignal


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


# --- credentials: a demo token issuer and internal keys, as shop up makes them --------


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> LocalCredentials:
    return ensure_credentials(tmp_path_factory.mktemp("credentials"))


Metadata = tuple[tuple[str, str], ...]


class _AddMetadata:
    """Adds fixed metadata (credentials) to every call of a test's channel."""

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    def _details(self, details: Any) -> Any:
        merged = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata)
        return details._replace(metadata=merged)


# grpc.aio files an interceptor under one call type only (the first base it matches),
# so unary and streaming calls each need their own.
class _AddUnaryMetadata(_AddMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AddStreamMetadata(_AddMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def user_metadata(credentials: LocalCredentials, customer: str, *, admin: bool = False) -> Metadata:
    """An end user's (or administrator's) bearer token from the demo issuer."""
    return (("authorization", f"Bearer {credentials.issuer().token(customer, admin=admin)}"),)


def caller_metadata(credentials: LocalCredentials, caller: str, callee_service: str) -> Metadata:
    """The caller token shop service ``caller`` sends to ``callee_service`` (full name)."""
    from shop.runtime.auth.internal import CallerTokens, read_internal_keys

    keys = read_internal_keys(str(credentials.internal_keys_dir))
    return ((CALLER_TOKEN_HEADER, CallerTokens(caller, keys[caller]).token(callee_service)),)


def channel_with(address: str, *metadata: Metadata, **kwargs: Any) -> grpc.aio.Channel:
    """An insecure channel whose calls carry ``metadata`` (e.g. user and caller tokens)."""
    combined = tuple(item for part in metadata for item in part)
    interceptors = [_AddUnaryMetadata(combined), _AddStreamMetadata(combined)]
    return grpc.aio.insecure_channel(address, interceptors=interceptors, **kwargs)


# --- one service process, as a pod starts it -----------------------------------------

PodEnv = Callable[..., dict[str, str]]


@pytest.fixture
def pod_env(tmp_path: Path, credentials: LocalCredentials) -> PodEnv:
    """``pod_env(**overrides)``: a service process's environment as a pod would get it:
    nothing of ours (SHOP_*, OTEL_*, DATABASE_*, GRPC_*) leaks in, it listens on a free
    loopback port, exports no metrics or spans, and stops without a drain delay."""

    def build(**overrides: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SHOP_", "OTEL_", "DATABASE_", "GRPC_"))
        }
        env.update(
            {
                "SHOP_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
                "SHOP_METRICS_ADDR": "off",
                "SHOP_DATA_DIR": str(tmp_path / "data"),
                "SHOP_DRAIN_DELAY_S": "0",
                "OTEL_TRACES_EXPORTER": "none",
                **credentials.service_env(),
            }
        )
        env.update(overrides)
        return env

    return build


def run_service_module(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m module`` (a service) to its exit, e.g. a start-up that must fail."""
    return subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


# --- local clusters (replica processes) ----------------------------------------------

ClusterFactory = Callable[..., LocalCluster]


@contextmanager
def _clusters(new_data_dir: Callable[[], Path]) -> Iterator[ClusterFactory]:
    started: list[LocalCluster] = []

    def start(
        gateway: int = 1, orders: int = 2, inventory: int = 2, **spec_args: Any
    ) -> LocalCluster:
        spec_args.setdefault("data_dir", new_data_dir())
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


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Starts local clusters on a free loopback net; all are stopped at teardown."""
    numbers = itertools.count()
    with _clusters(lambda: tmp_path / f"cluster{next(numbers)}") as start:
        yield start


@pytest.fixture(scope="module")
def module_cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """``cluster_factory`` for a module-scoped cluster shared by one module's tests."""
    with _clusters(lambda: tmp_path_factory.mktemp("cluster")) as start:
        yield start


# --- in-process servers (the runtime's serve on the test's event loop) ---------------


@dataclass
class InProcessServer:
    address: str
    config: ServerConfig
    shutdown: ShutdownSignal
    task: asyncio.Task[None]
    serving: bool = False


StartServer = Callable[..., Awaitable[InProcessServer]]


async def _wait_serving(server: InProcessServer, timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # Short reconnect backoff: the first attempts may come before the port is bound.
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    async with grpc.aio.insecure_channel(server.address, options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.task.done():
                server.task.result()  # raises what stopped the server
                raise AssertionError(f"server on {server.address} exited before serving")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    server.serving = True
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"server on {server.address} not SERVING after {timeout_s}s")
            await asyncio.sleep(0.05)


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
    started: list[InProcessServer] = []

    async def start(service: str, setup: ServiceSetup, **overrides: Any) -> InProcessServer:
        config = ServerConfig(
            listen_addr=f"127.0.0.1:{free_port()}",
            metrics_addr="",
            pod_name=f"{service}-0",
            log_level="info",
            drain_delay_s=0.0,
            shutdown_grace_s=1.0,
            max_connection_age_s=0.0,
            max_connection_age_grace_s=0.0,
            keepalive_time_s=0.0,
            use_uvloop=False,
        )
        config = dataclasses.replace(config, **overrides)
        shutdown = ShutdownSignal()
        task = asyncio.get_running_loop().create_task(serve(service, setup, config, shutdown))
        server = InProcessServer(config.listen_addr, config, shutdown, task)
        started.append(server)
        await _wait_serving(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.shutdown.trigger("test finished")
        tasks = [server.task for server in started]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=30)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
            assert not pending, "serve() did not return after its shutdown signal"
            # A failed start-up was already reported by the test that caused it; a
            # server that was SERVING must stop without an error.
            for server in started:
                if server.task.cancelled():
                    continue
                if server.serving:
                    server.task.result()
                else:
                    server.task.exception()
