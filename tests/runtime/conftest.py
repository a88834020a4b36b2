"""In-process servers built with the real ``shop.runtime.server.serve``.

Each server runs as a task on the test's event loop with the same interceptors,
health service and error mapping as a service process; teardown stops it through
its ShutdownSignal, exactly as SIGTERM would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.runtime.config import ServerConfig
from shop.runtime.server import ServiceSetup, serve
from shop.runtime.shutdown import ShutdownSignal


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class InProcessServer:
    address: str
    config: ServerConfig
    shutdown: ShutdownSignal
    task: asyncio.Task[None]


StartServer = Callable[..., Awaitable[InProcessServer]]


async def _wait_serving(server: InProcessServer, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.task.done():
                server.task.result()  # raises what made serve() fail
                raise AssertionError("serve() returned before SERVING")
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{server.address} not SERVING after {timeout_s}s")
            await asyncio.sleep(0.05)


@pytest.fixture
async def start_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartServer]:
    """``await start_server(service, setup, **ServerConfig overrides)`` -> a SERVING server."""
    # No collector in unit tests; channel settings come from the environment as in a pod.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
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
            server.shutdown.trigger("test teardown")
        tasks = [server.task for server in started]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
            assert not pending, "serve() did not return after its shutdown signal"
            # A failed start-up was already reported by the test that caused it.
            for task in tasks:
                if not task.cancelled():
                    task.exception()
