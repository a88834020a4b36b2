"""Services run in-process by the runtime's own ``serve`` on the test's event loop:
the same interceptors, health service and error mapping as a service process."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.local.addresses import free_port
from shop.runtime.auth import OPEN
from shop.runtime.config import ServerConfig
from shop.runtime.errors import FieldViolation, InvalidArgument
from shop.runtime.server import Runtime, ServiceSetup, serve
from shop.runtime.shutdown import ShutdownSignal

from .waiting import wait_until_async


@dataclass
class InProcessServer:
    address: str
    config: ServerConfig
    shutdown: ShutdownSignal
    task: asyncio.Task[None]
    serving: bool = False


StartServer = Callable[..., Awaitable[InProcessServer]]


def server_config(service: str) -> ServerConfig:
    """A server on a free loopback port, pod ``<service>-0``, no metrics, no drain delay."""
    return ServerConfig(
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


async def wait_serving(server: InProcessServer, timeout_s: float = 30) -> None:
    """Until the server's health service says SERVING; fails at once if it exits."""
    # Short reconnect backoff: the first attempts may come before the port is bound.
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    async with grpc.aio.insecure_channel(server.address, options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            if server.task.done():
                server.task.result()  # raises what stopped the server
                raise AssertionError(f"server on {server.address} exited before serving")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        await wait_until_async(serving, f"server on {server.address} SERVING", timeout_s)
        server.serving = True


@asynccontextmanager
async def in_process_servers() -> AsyncIterator[StartServer]:
    """``await start(service, setup, **ServerConfig overrides)`` -> a SERVING server.

    It listens on a free loopback port unless ``listen_addr`` is given; its pod name
    is ``<service>-0`` unless ``pod_name`` is. On exit every server is stopped
    through its ShutdownSignal, exactly as SIGTERM would, and must return cleanly.
    """
    started: list[InProcessServer] = []

    async def start(service: str, setup: ServiceSetup, **overrides: Any) -> InProcessServer:
        config = dataclasses.replace(server_config(service), **overrides)
        shutdown = ShutdownSignal()
        task = asyncio.get_running_loop().create_task(serve(service, setup, config, shutdown))
        server = InProcessServer(config.listen_addr, config, shutdown, task)
        started.append(server)
        await wait_serving(server)
        return server

    try:
        yield start
    finally:
        await _stop(started)


async def _stop(started: list[InProcessServer]) -> None:
    for server in reversed(started):
        server.shutdown.trigger("test finished")
    tasks = [server.task for server in started]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    assert not pending, "serve() did not return after its shutdown signal"
    # A failed start-up was already reported by the test that caused it; a server that
    # was SERVING must stop without an error.
    for server in started:
        if server.task.cancelled():
            continue
        if server.serving:
            server.task.result()
        else:
            server.task.exception()


def open_methods(runtime: Runtime, service: str, methods: Iterable[str]) -> None:
    """Anyone may call these methods of ``service`` (a full gRPC service name): made-up
    services that test the runtime, not the shop's access rules, open theirs."""
    runtime.access.protect(service, dict.fromkeys(methods, OPEN))


WHO = "test.v1.Who"


def who_setup() -> ServiceSetup:
    """A made-up service ``test.v1.Who`` whose one method, ``Who``, answers with the pod's
    name (so a client can count where its calls went), or raises ``InvalidArgument`` for
    the request ``b"invalid"`` (a failed call with error details)."""

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        pod = runtime.config.pod_name.encode()

        async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if request == b"invalid":
                raise InvalidArgument([FieldViolation("request", "is 'invalid'")])
            return pod

        runtime.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    WHO, {"Who": grpc.unary_unary_rpc_method_handler(who)}
                ),
            )
        )
        open_methods(runtime, WHO, ["Who"])
        yield (WHO,)

    return setup
