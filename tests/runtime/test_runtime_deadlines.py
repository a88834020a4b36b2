"""Deadline propagation and route reporting through two in-process servers.

``relay`` receives a call and makes one downstream call to ``probe`` through a
channel built by ``Runtime.channel`` (the shop's client interceptors); ``probe``
answers with the time its own handler had left. So the test sees the deadline the
downstream hop really got, not what the code meant to send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from shop.runtime import Runtime
from shop.runtime.callscope import ROUTE_TRAILER, detached_scope, parse_route

from ..support.servers import StartServer, open_methods

PROBE = "test.v1.Probe"
# grpc rounds the grpc-timeout header up at each hop (it carries only a few digits).
SLACK_S = 0.1
RELAY = "test.v1.Relay"


def _probe_setup() -> Any:
    async def remaining(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return json.dumps({"remaining": context.time_remaining()}).encode()

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        runtime.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    PROBE, {"Remaining": grpc.unary_unary_rpc_method_handler(remaining)}
                ),
            )
        )
        open_methods(runtime, PROBE, ["Remaining"])
        yield (PROBE,)

    return setup


def _relay_setup(probe_address: str) -> Any:
    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        channel = runtime.channel(f"ipv4:{probe_address}", PROBE)
        downstream = channel.unary_unary(f"/{PROBE}/Remaining")

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            options = json.loads(request)
            if options.get("detached"):
                with detached_scope():
                    answer = await downstream(b"", timeout=options.get("downstream_timeout"))
            else:
                answer = await downstream(b"", timeout=options.get("downstream_timeout"))
            seen = json.loads(answer)
            seen["relay_remaining"] = context.time_remaining()
            return json.dumps(seen).encode()

        runtime.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    RELAY, {"Forward": grpc.unary_unary_rpc_method_handler(forward)}
                ),
            )
        )
        open_methods(runtime, RELAY, ["Forward"])
        yield (RELAY,)

    return setup


@pytest.fixture
async def relay(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable]:
    # The relay's configured downstream timeout, used only when nothing else applies.
    monkeypatch.setenv("SHOP_DOWNSTREAM_TIMEOUT_S", "3")
    probe = await start_server("probe", _probe_setup())
    relay_server = await start_server("relay", _relay_setup(probe.address))
    async with grpc.aio.insecure_channel(relay_server.address) as channel:
        yield channel.unary_unary(f"/{RELAY}/Forward")


async def _forward(
    relay: grpc.aio.UnaryUnaryMultiCallable, deadline_s: float | None, **options: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """Calls the relay with a ``deadline_s`` deadline (None: no deadline)."""
    call = relay(json.dumps(options).encode(), timeout=deadline_s)
    answer = json.loads(await call)
    trailers = {k: v for k, v in await call.trailing_metadata()}
    return answer, trailers


async def test_incoming_deadline_reaches_the_downstream_call(
    relay: grpc.aio.UnaryUnaryMultiCallable,
) -> None:
    seen, _ = await _forward(relay, deadline_s=1.5)
    # The configured 3 s would be longer: the caller's 1.5 s wins, minus time spent.
    assert 0.3 < seen["remaining"] <= 1.5 + SLACK_S
    assert seen["remaining"] <= seen["relay_remaining"] + SLACK_S


async def test_configured_timeout_applies_without_incoming_deadline(
    relay: grpc.aio.UnaryUnaryMultiCallable,
) -> None:
    seen, _ = await _forward(relay, deadline_s=None)
    assert seen["relay_remaining"] is None
    assert 2.0 < seen["remaining"] <= 3.0 + SLACK_S


async def test_explicit_call_timeout_shorter_than_incoming_wins(
    relay: grpc.aio.UnaryUnaryMultiCallable,
) -> None:
    seen, _ = await _forward(relay, deadline_s=30, downstream_timeout=1.0)
    assert 0.3 < seen["remaining"] <= 1.0 + SLACK_S


async def test_explicit_call_timeout_never_exceeds_incoming_deadline(
    relay: grpc.aio.UnaryUnaryMultiCallable,
) -> None:
    seen, _ = await _forward(relay, deadline_s=1.2, downstream_timeout=20.0)
    assert 0.3 < seen["remaining"] <= 1.2 + SLACK_S


async def test_incoming_deadline_longer_than_configured_timeout(
    relay: grpc.aio.UnaryUnaryMultiCallable,
) -> None:
    # SHOP_DOWNSTREAM_TIMEOUT_S is the deadline "when the incoming call has none":
    # a caller that allows 20 s lets the downstream hop use them.
    seen, _ = await _forward(relay, deadline_s=20)
    assert 15 < seen["remaining"] <= 20 + SLACK_S


async def test_detached_scope_uses_configured_timeout(
    relay: grpc.aio.UnaryUnaryMultiCallable,
) -> None:
    # Clean-up calls must outlive a caller's short deadline.
    seen, _ = await _forward(relay, deadline_s=1.0, detached=True)
    assert 2.0 < seen["remaining"] <= 3.0 + SLACK_S


async def test_route_trailer_names_every_hop(relay: grpc.aio.UnaryUnaryMultiCallable) -> None:
    _, trailers = await _forward(relay, deadline_s=5)
    assert trailers[ROUTE_TRAILER] == "relay/relay-0 probe/probe-0"
    assert parse_route(trailers[ROUTE_TRAILER]) == {"relay": "relay-0", "probe": "probe-0"}


async def test_expired_incoming_deadline_leaves_no_time_downstream(
    start_server: StartServer,
) -> None:
    """Work that outlives the caller's deadline (shielded from the handler's
    cancellation, like orders' saga) gives its downstream call no time at all,
    never the configured default."""
    probe = await start_server("probe", _probe_setup())
    outcome: asyncio.Future[tuple[grpc.StatusCode, float | None]] = (
        asyncio.get_running_loop().create_future()
    )

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        downstream = runtime.channel(f"ipv4:{probe.address}", PROBE).unary_unary(
            f"/{PROBE}/Remaining"
        )

        async def work() -> None:
            await asyncio.sleep(0.5)  # outlive the caller's 0.2 s deadline on purpose
            try:
                answer = await downstream(b"")
                outcome.set_result((grpc.StatusCode.OK, json.loads(answer)["remaining"]))
            except grpc.aio.AioRpcError as error:
                outcome.set_result((error.code(), None))

        async def late(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await asyncio.shield(work())
            return b""

        runtime.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    RELAY, {"Late": grpc.unary_unary_rpc_method_handler(late)}
                ),
            )
        )
        open_methods(runtime, RELAY, ["Late"])
        yield (RELAY,)

    server = await start_server("late", setup)
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{RELAY}/Late")(b"", timeout=0.2)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    code, remaining = await asyncio.wait_for(outcome, 10)
    # grpc may still deliver a call whose deadline is a millisecond away; either way
    # the downstream hop got no more than that, not SHOP_DOWNSTREAM_TIMEOUT_S.
    if code == grpc.StatusCode.OK:
        assert remaining is not None and remaining < 0.05
    else:
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
