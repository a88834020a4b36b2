"""The Echo service on a plain ``grpc.aio`` server: the benchmark's zero point.

No interceptors, no metrics, no tracing, no reflection, no JSON logs. The only
extra is the gRPC health service: readiness waiting (``shop.local.cluster``) and
the benchmark detect a started server through it, and it costs nothing per Echo
call. Whatever the runtime adds on top of this shows up as the difference between
``python -m shop.echo --bare`` and ``python -m shop.echo``.

With ``forward`` (``--forward HOST:PORT``) the server answers each Echo with the
answer of the next hop's Echo instead of its own: three such servers in a row are
the floor of a three-hop chain (``shop bench``'s chain-bare), what gRPC alone costs
for the shop's gateway -> orders -> inventory. The next hop is reached through one
plain insecure channel (gRPC's default pick_first, no options, no interceptors)
opened at start-up; each call waits for it at most the incoming call's remaining
time, or :data:`FORWARD_TIMEOUT_S` for a call without a deadline, and a failure
there reaches the caller with its own status code. Without ``forward`` the server
runs the plain :class:`EchoServicer`, exactly as before: nothing per call is added.
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
from shop.v1 import echo_pb2, echo_pb2_grpc

# How long a forwarded call may wait for the next hop when its caller set no deadline.
FORWARD_TIMEOUT_S = 10.0


class ForwardingEchoServicer(echo_pb2_grpc.EchoServicer):
    """Echo that passes each request on to the next hop and returns its answer."""

    def __init__(self, channel: grpc.aio.Channel, target: str) -> None:
        self._echo = echo_pb2_grpc.EchoStub(channel).Echo
        self._target = target

    async def Echo(
        self, request: echo_pb2.EchoMessage, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoMessage:
        remaining = context.time_remaining()
        timeout = FORWARD_TIMEOUT_S if remaining is None else remaining
        try:
            reply: echo_pb2.EchoMessage = await self._echo(request, timeout=timeout)
            return reply
        except grpc.aio.AioRpcError as error:
            # The next hop's status, passed on: left to gRPC, the caller would get UNKNOWN.
            await context.abort(error.code(), f"next hop {self._target}: {error.details()}")
            raise  # not reached: abort raises


async def serve_bare(
    listen_addr: str, shutdown: ShutdownSignal, grace_s: float, forward: str | None = None
) -> None:
    """Serves Echo on ``listen_addr`` until ``shutdown`` fires, then stops within ``grace_s``;
    with ``forward`` (``host:port``), each call is answered by that server's Echo."""
    # so_reuseport off for the same reason as the runtime: replicas never share a socket.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    channel = None
    servicer: echo_pb2_grpc.EchoServicer = EchoServicer()
    if forward is not None:
        channel = grpc.aio.insecure_channel(forward)
        # Start connecting now (without waiting): the first call need not pay for it.
        channel.get_state(try_to_connect=True)
        servicer = ForwardingEchoServicer(channel, forward)
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        try:
            server.add_insecure_port(listen_addr)
        except RuntimeError:
            raise ConfigError(
                f"SHOP_LISTEN_ADDR={listen_addr!r}: cannot listen there "
                "(address in use or not local)"
            ) from None
        await server.start()
        for name in ("", SERVICE_NAME):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        onward = "" if forward is None else f", forwarding to {forward}"
        print(f"echo (bare): serving on {listen_addr}{onward}", file=sys.stderr, flush=True)
        await shutdown.wait()
        await health.enter_graceful_shutdown()
        await server.stop(grace_s)
    finally:
        if channel is not None:
            await channel.close()


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


def run_bare(
    listen_addr: str, use_uvloop: bool, grace_s: float, forward: str | None = None
) -> None:
    async def main() -> None:
        shutdown = ShutdownSignal()
        shutdown.install()
        await serve_bare(listen_addr, shutdown, grace_s, forward)

    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        runner.run(main())
