"""``Runtime.on_drain``: what a service registers runs once, when the drain delay is
over and before ``server.stop(grace)``, so a stream it ends reaches its client as OK
instead of being cut after the grace; a broken callback stops nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest

from shop.runtime import Runtime
from shop.runtime.server import ServiceSetup

from ..support.servers import StartServer, open_methods

SERVICE = "test.v1.Following"
DRAIN_DELAY_S = 0.5
# Far beyond the test's margin: a stream still open that long was cut by the stop.
GRACE_S = 20.0
MARGIN_S = 2.0


def _following_setup(fired: list[tuple[str, float]]) -> ServiceSetup:
    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        loop = asyncio.get_running_loop()
        ending = asyncio.Event()

        def broken() -> None:
            raise RuntimeError("a bug in a drain callback")

        runtime.on_drain(broken)
        runtime.on_drain(lambda: fired.append(("drain", loop.time())))
        runtime.on_drain(ending.set)

        async def follow(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            yield b"first"
            await ending.wait()
            yield b"last"

        handlers = {"Follow": grpc.unary_stream_rpc_method_handler(follow)}
        runtime.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        open_methods(runtime, SERVICE, handlers)
        yield (SERVICE,)
        # After the stop: the moment has passed, so a late registration runs at once.
        runtime.on_drain(lambda: fired.append(("late", loop.time())))

    return setup


async def test_drain_callbacks_end_streams_ok_after_the_delay_and_before_the_stop(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []
    server = await start_server(
        "following",
        _following_setup(fired),
        drain_delay_s=DRAIN_DELAY_S,
        shutdown_grace_s=GRACE_S,
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Follow")(b"", timeout=60)
        assert await call.read() == b"first"
        signalled = loop.time()
        server.shutdown.trigger("test: drain")
        async with asyncio.timeout(DRAIN_DELAY_S + MARGIN_S):
            assert await call.read() == b"last"
            assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert loop.time() - signalled >= DRAIN_DELAY_S
    await asyncio.wait_for(asyncio.shield(server.task), MARGIN_S)

    assert [name for name, _ in fired] == ["drain", "late"]
    assert fired[0][1] - signalled >= DRAIN_DELAY_S
    failed = [r for r in caplog.records if r.getMessage() == "drain callback failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert "a bug in a drain callback" in str(failed[0].exc_info[1])
