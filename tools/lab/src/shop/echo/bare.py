"""The Echo service on a plain ``grpc.aio`` server: the benchmark's zero point.

No interceptors, no metrics, no tracing, no reflection, no JSON logs. The only
extra is the gRPC health service: readiness waiting (``shop.local.cluster``) and
the benchmark detect a started server through it, and it costs nothing per Echo
call. Whatever the runtime adds on top of this shows up as the difference between
``python -m shop.echo --bare`` and ``python -m shop.echo``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from shop.echo.servicer import SERVICE_NAME, EchoServicer
from shop.runtime.config import ConfigError
from shop.runtime.shutdown import ShutdownSignal
from shop.v1 import echo_pb2_grpc


async def serve_bare(listen_addr: str, shutdown: ShutdownSignal, grace_s: float) -> None:
    """Serves Echo on ``listen_addr`` until ``shutdown`` fires, then stops within ``grace_s``."""
    # so_reuseport off for the same reason as the runtime: replicas never share a socket.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        server.add_insecure_port(listen_addr)
    except RuntimeError:
        raise ConfigError(
            f"SHOP_LISTEN_ADDR={listen_addr!r}: cannot listen there (address in use or not local)"
        ) from None
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    print(f"echo (bare): serving on {listen_addr}", file=sys.stderr, flush=True)
    await shutdown.wait()
    await health.enter_graceful_shutdown()
    await server.stop(grace_s)


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed, so bare and runtime run on the same loop."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        print("echo (bare): uvloop not installed; using asyncio's loop", file=sys.stderr)
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_bare(listen_addr: str, use_uvloop: bool, grace_s: float) -> None:
    async def main() -> None:
        shutdown = ShutdownSignal()
        shutdown.install()
        await serve_bare(listen_addr, shutdown, grace_s)

    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        runner.run(main())
