"""Gateway fixtures: the real service setups (``shop.<service>.app.setup``) run by
the runtime's ``serve`` on loopback in this test's event loop, configured through
the environment as in a pod.

``edge``: a gateway whose downstream services do not exist, so only what the gateway
itself decides can succeed. ``chain``: gateway -> orders -> inventory on SQLite.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.gateway.app import setup as gateway_setup
from shop.inventory.app import setup as inventory_setup
from shop.orders.app import setup as orders_setup
from shop.runtime.config import ServerConfig
from shop.runtime.server import ServiceSetup, serve
from shop.runtime.shutdown import ShutdownSignal
from shop.v1 import gateway_pb2_grpc, inventory_pb2_grpc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serving(service: str, setup: ServiceSetup, address: str) -> AsyncIterator[str]:
    """Runs ``setup`` under the runtime's ``serve`` on ``address``."""
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


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")  # nothing collects spans here
    monkeypatch.setenv("SHOP_SEED_STOCK", "100")
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
async def edge(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    monkeypatch.setenv("SHOP_ORDERS_TARGET", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("SHOP_INVENTORY_TARGET", f"127.0.0.1:{free_port()}")
    async with AsyncExitStack() as stack:
        address = await stack.enter_async_context(
            serving("gateway", gateway_setup, f"127.0.0.1:{free_port()}")
        )
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(address))
        yield gateway_pb2_grpc.GatewayStub(channel)


@dataclass
class Chain:
    gateway: gateway_pb2_grpc.GatewayStub
    inventory: inventory_pb2_grpc.InventoryStub


@pytest.fixture
async def chain(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Chain]:
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("inventory", "orders", "gateway")}
    monkeypatch.setenv("SHOP_INVENTORY_TARGET", addresses["inventory"])
    monkeypatch.setenv("SHOP_ORDERS_TARGET", addresses["orders"])
    async with AsyncExitStack() as stack:
        for name, setup in (
            ("inventory", inventory_setup),
            ("orders", orders_setup),
            ("gateway", gateway_setup),
        ):
            await stack.enter_async_context(serving(name, setup, addresses[name]))
        gateway = await stack.enter_async_context(grpc.aio.insecure_channel(addresses["gateway"]))
        inventory = await stack.enter_async_context(
            grpc.aio.insecure_channel(addresses["inventory"])
        )
        yield Chain(
            gateway_pb2_grpc.GatewayStub(gateway), inventory_pb2_grpc.InventoryStub(inventory)
        )
