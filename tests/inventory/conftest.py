"""Inventory fixtures: stores on a fresh database of each kind, and the service on
loopback through the shared runtime's own ``serve`` (interceptors, error mapping,
health), in this test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.inventory.app import SERVICE_NAME
from shop.inventory.servicer import InventoryServicer
from shop.inventory.store import InventoryStore
from shop.runtime.config import ServerConfig
from shop.runtime.database import Database
from shop.runtime.server import Runtime, ServiceSetup, serve
from shop.runtime.shutdown import ShutdownSignal
from shop.v1 import inventory_pb2_grpc

SEED_STOCK = 100


@pytest.fixture(autouse=True)
def _no_trace_export(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process servers read the OTEL_* variables; nothing collects spans here.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")


@pytest.fixture
async def open_store(database_url: str) -> AsyncIterator[Callable[[], Awaitable[InventoryStore]]]:
    """Opens stores on one database, each with its own engines (as replicas have)."""
    databases: list[Database] = []

    async def open_one() -> InventoryStore:
        db = Database(database_url)
        databases.append(db)
        store = InventoryStore(db)
        await store.initialize(SEED_STOCK)
        return store

    try:
        yield open_one
    finally:
        for db in databases:
            await db.dispose()


@pytest.fixture
async def store(open_store: Callable[[], Awaitable[InventoryStore]]) -> InventoryStore:
    return await open_store()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serving(service: str, setup: ServiceSetup) -> AsyncIterator[str]:
    """Runs ``setup`` under the runtime's ``serve`` on a free loopback port."""
    address = f"127.0.0.1:{free_port()}"
    config = ServerConfig(
        listen_addr=address,
        metrics_addr="",
        pod_name=f"{service}-t0",
        log_level="info",
        drain_delay_s=0.0,
        shutdown_grace_s=1.0,
        max_connection_age_s=0.0,
        max_connection_age_grace_s=0.0,
        keepalive_time_s=0.0,
        use_uvloop=False,
    )
    shutdown = ShutdownSignal()
    task = asyncio.get_running_loop().create_task(serve(service, setup, config, shutdown))
    try:
        await _wait_serving(address, task)
        yield address
    finally:
        shutdown.trigger("test finished")
        await asyncio.wait_for(task, 30)


async def _wait_serving(address: str, task: asyncio.Task[None], timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # Short reconnect backoff: the first attempts may come before the port is bound.
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if task.done():
                task.result()  # raises what stopped the server
                raise AssertionError(f"server on {address} exited before serving")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"server on {address} not SERVING after {timeout_s}s")
            await asyncio.sleep(0.05)


@pytest.fixture
async def inventory_stub(database_url: str) -> AsyncIterator[inventory_pb2_grpc.InventoryStub]:
    """A client of an inventory server (seeded catalog) on a fresh database."""

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[tuple[str, ...]]:
        db = Database(database_url)
        store = InventoryStore(db)
        await store.initialize(SEED_STOCK)
        inventory_pb2_grpc.add_InventoryServicer_to_server(InventoryServicer(store), runtime.server)
        try:
            yield (SERVICE_NAME,)
        finally:
            await db.dispose()

    async with AsyncExitStack() as stack:
        address = await stack.enter_async_context(serving("inventory", setup))
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(address))
        yield inventory_pb2_grpc.InventoryStub(channel)
