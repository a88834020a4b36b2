"""What a client sees when a call fails for a reason that is not a domain error, and
what the log sees: real servers built by ``serve``, real grpcio clients.

- an unexpected exception is INTERNAL with a generic message and a reference (error
  id, trace id), logged once with its stack however often it repeats;
- an outage is UNAVAILABLE naming the dependency, never with the driver's text;
- a body that does not parse is INVALID_ARGUMENT naming the field, without a
  traceback in the log;
- a server passing a downstream UNAVAILABLE up tells the caller's channel not to
  retry (``grpc-retry-pushback-ms: -1``), which grpcio honours; retry throttling
  bounds attempts in an outage; attempts that are retries are counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from shop.local.addresses import free_port
from shop.runtime import Runtime
from shop.runtime.channels import RETRY_THROTTLING, build_channel
from shop.runtime.config import ChannelConfig
from shop.runtime.metrics import RpcMetrics
from shop.v1 import common_pb2, orders_pb2

from ..support.servers import InProcessServer, StartServer, open_methods

SERVICE = "test.v1.Failing"
SECRET = "password=hunter2 host=10.1.2.3"
# gRFC A6: a negative value tells the client's channel not to retry.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
ATTEMPTS = 4  # SHOP_RETRY_MAX_ATTEMPTS' default, what build_channel configures


def _broken() -> None:
    # One line for every call: the same bug, so the same error id.
    raise RuntimeError(f"bug with {SECRET}")


def _failing_setup(downstream: str | None = None, runtimes: list[Runtime] | None = None) -> Any:
    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        if runtimes is not None:
            runtimes.append(runtime)

        async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            _broken()
            return b""

        async def refused(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            # What a driver raises when the server behind it is down.
            raise ConnectionRefusedError(111, f"Connect call failed ({SECRET})")

        async def pushback(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gone", ((RETRY_PUSHBACK_KEY, "-1"),))
            return b""

        async def create(
            request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
        ) -> common_pb2.Order:
            return common_pb2.Order(customer_id=request.customer_id)

        async def watch(
            request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[common_pb2.Order]:
            yield common_pb2.Order(customer_id=request.customer_id)

        handlers = {
            "Broken": grpc.unary_unary_rpc_method_handler(broken),
            "Refused": grpc.unary_unary_rpc_method_handler(refused),
            "Pushback": grpc.unary_unary_rpc_method_handler(pushback),
            "Create": grpc.unary_unary_rpc_method_handler(
                create,
                request_deserializer=orders_pb2.CreateOrderRequest.FromString,
                response_serializer=common_pb2.Order.SerializeToString,
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch,
                request_deserializer=orders_pb2.CreateOrderRequest.FromString,
                response_serializer=common_pb2.Order.SerializeToString,
            ),
        }
        if downstream is not None:
            relayed = runtime.channel(f"ipv4:{downstream}", "test.v1.Inventory").unary_unary(
                "/test.v1.Inventory/Reserve"
            )

            async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                answer: bytes = await relayed(request)
                return answer

            handlers["Relay"] = grpc.unary_unary_rpc_method_handler(relay)
        runtime.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        open_methods(runtime, SERVICE, handlers)
        yield (SERVICE,)

    return setup


async def _fail(channel: grpc.aio.Channel, method: str, request: bytes = b"") -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=10)
    return caught.value


def _started(runtime: Runtime, method: str, family: str = "grpc_server_started_total") -> float:
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method}
    return runtime.metrics.registry.get_sample_value(family, labels) or 0.0


def _failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- unexpected exceptions: INTERNAL, a reference, one stack in the log ------------------


async def test_unexpected_exception_is_internal_with_an_error_id_logged_once(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server("failing", _failing_setup())
    async with grpc.aio.insecure_channel(server.address) as channel:
        errors = [await _fail(channel, "Broken") for _ in range(25)]
    messages = {error.details() for error in errors}
    assert {error.code() for error in errors} == {grpc.StatusCode.INTERNAL}
    (message,) = messages  # the same bug, the same reference
    assert message.startswith("internal error (error_id=")
    assert "hunter2" not in message and "RuntimeError" not in message
    reference = message.removeprefix("internal error (error_id=").rstrip(")")
    status = rpc_status.from_call(errors[0])
    assert status is not None
    info = error_details_pb2.RequestInfo()
    assert status.details[0].Unpack(info) and info.request_id == reference
    # One line with the stack, carrying the id the client got; nothing per call.
    logged = _failure_records(caplog)
    assert [(r.getMessage(), r.error_id) for r in logged] == [("unexpected error", reference)]  # type: ignore[attr-defined]
    assert logged[0].exc_info is not None and "_broken" in caplog.text


async def test_with_tracing_on_the_message_carries_the_trace_id(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spans go to the console exporter (captured by pytest); what matters is the id.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    server = await start_server("failing", _failing_setup())
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Broken")(
                b"", metadata=(("traceparent", traceparent),), timeout=10
            )
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details().startswith(f"internal error (trace_id={trace_id}, error_id=")


async def test_downstream_unknown_stops_at_the_first_shop_hop(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A callee that answers UNKNOWN with an exception's text (any non-shop server):
    the text stays in our log, the client gets INTERNAL with a reference."""

    async def leaky(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.UNKNOWN, f"Exception calling application: {SECRET}")
        return b""

    bare = grpc.aio.server()
    bare.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.v1.Inventory", {"Reserve": grpc.unary_unary_rpc_method_handler(leaky)}
            ),
        )
    )
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        outer = await start_server("outer", _failing_setup(downstream=f"127.0.0.1:{port}"))
        async with grpc.aio.insecure_channel(outer.address) as channel:
            error = await _fail(channel, "Relay")
    finally:
        await bare.stop(None)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in error.details()
    (record,) = _failure_records(caplog)
    assert SECRET in record.downstream_error  # type: ignore[attr-defined]


# --- outages: UNAVAILABLE naming the dependency -----------------------------------------


async def test_refused_connection_is_unavailable_without_its_text(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server("failing", _failing_setup())
    async with grpc.aio.insecure_channel(server.address) as channel:
        errors = [await _fail(channel, "Refused") for _ in range(10)]
    assert {(e.code(), e.details()) for e in errors} == {
        (
            grpc.StatusCode.UNAVAILABLE,
            "a service failing depends on is unavailable; try again later",
        )
    }
    info = error_details_pb2.ErrorInfo()
    status = rpc_status.from_call(errors[0])
    assert status is not None and status.details[0].Unpack(info)
    assert info.reason == "DEPENDENCY_UNAVAILABLE"
    # Its own outage: the caller's channel may retry it (no pushback).
    assert RETRY_PUSHBACK_KEY not in dict(errors[0].trailing_metadata() or ())
    # One warning, no stack; the driver's text is there for operators only.
    (record,) = _failure_records(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert SECRET in record.error  # type: ignore[attr-defined]


async def test_unreachable_downstream_is_unavailable_naming_it_and_not_retried_above(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay's channel retried the dead callee; its own caller must not retry
    the relay, and hears which service is down, not gRPC core's address list."""
    runtimes: list[Runtime] = []
    dead = f"127.0.0.1:{free_port()}"
    relay = await start_server("outer", _failing_setup(downstream=dead, runtimes=runtimes))
    calls = 5
    async with _retrying_channel(relay) as channel:
        errors = [await _fail(channel, "Relay") for _ in range(calls)]
    for error in errors:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == "inventory is unavailable; try again later"
        assert dict(error.trailing_metadata() or ())[RETRY_PUSHBACK_KEY] == "-1"
    (runtime,) = runtimes
    assert _started(runtime, "Relay") == calls
    assert _started(runtime, "Relay", "grpc_server_retried_total") == 0
    assert "127.0.0.1" not in errors[0].details()
    assert len(_failure_records(caplog)) == 1


# --- retries: pushback honoured, throttled, counted ---------------------------------------


@asynccontextmanager
async def _retrying_channel(server: InProcessServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel as a shop service builds it (retry policy and throttling)."""
    config = ChannelConfig.from_env({})
    assert config.retry_max_attempts == ATTEMPTS
    channel = build_channel(
        f"ipv4:{server.address}", config, SERVICE, RpcMetrics.create("client", "c-0"), None
    )
    async with channel:
        yield channel


async def test_grpc_client_honours_a_negative_retry_pushback(start_server: StartServer) -> None:
    runtimes: list[Runtime] = []
    server = await start_server("failing", _failing_setup(runtimes=runtimes))
    (runtime,) = runtimes
    async with _retrying_channel(server) as channel:
        await _fail(channel, "Refused")
    # Without pushback the channel makes every attempt; each retry says so.
    assert _started(runtime, "Refused") == ATTEMPTS
    assert _started(runtime, "Refused", "grpc_server_retried_total") == ATTEMPTS - 1
    async with _retrying_channel(server) as channel:
        error = await _fail(channel, "Pushback")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert _started(runtime, "Pushback") == 1
    assert _started(runtime, "Pushback", "grpc_server_retried_total") == 0


async def test_retry_throttling_bounds_attempts_during_an_outage(
    start_server: StartServer,
) -> None:
    """maxTokens 100, tokenRatio 0.1: calls make all their attempts until 50 have
    failed (100 -> 50 tokens), then at 50 tokens or fewer nothing is retried: one
    attempt per call."""
    runtimes: list[Runtime] = []
    server = await start_server("failing", _failing_setup(runtimes=runtimes))
    (runtime,) = runtimes
    retried_through = int(RETRY_THROTTLING["maxTokens"]) // 2
    calls = 30
    async with _retrying_channel(server) as channel:
        for _ in range(calls):
            await _fail(channel, "Refused")
    attempts = _started(runtime, "Refused")
    # 50 attempts spend the calls that had retries (12 with 4, the 13th with 2); every
    # later call has one.
    calls_with_retries = math.ceil(retried_through / ATTEMPTS)
    expected = retried_through + calls - calls_with_retries
    assert attempts == expected, f"{attempts} attempts for {calls} calls"


# --- bodies that do not parse -----------------------------------------------------------


def _valid_body() -> bytes:
    request = orders_pb2.CreateOrderRequest(
        idempotency_key="k-1",
        customer_id="c-1",
        items=[common_pb2.OrderItem(sku="AB", quantity=1), common_pb2.OrderItem(sku="CD")],
    )
    return request.SerializeToString()


def _bad_utf8_in_second_sku() -> bytes:
    body = _valid_body()
    assert body.count(b"CD") == 1
    return body.replace(b"CD", b"\xff\xfe")


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (_bad_utf8_in_second_sku(), "items[1].sku", "is not valid UTF-8"),
        (_valid_body()[:-3], "items[1]", "is truncated"),
        (b"\xff" * 8, "request", "ends in the middle of a field (truncated or not protobuf)"),
    ],
    ids=["invalid-utf8", "truncated", "garbage"],
)
@pytest.mark.parametrize("method", ["Create", "Watch"])
async def test_undecodable_request_is_invalid_argument_naming_the_field(
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    method: str,
    body: bytes,
    field: str,
    problem: str,
) -> None:
    server = await start_server("failing", _failing_setup())
    async with grpc.aio.insecure_channel(server.address) as channel:
        for _ in range(3):
            if method == "Create":
                call: Any = channel.unary_unary(f"/{SERVICE}/Create")(body, timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
            else:
                stream = channel.unary_stream(f"/{SERVICE}/Watch")(body, timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stream.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details() == f"{field}: {problem}"
            status = rpc_status.from_call(caught.value)
            assert status is not None
            request = error_details_pb2.BadRequest()
            assert status.details[0].Unpack(request)
            assert [v.field for v in request.field_violations] == [field]
        # The body still decodes when valid: the wrapper only catches failures.
        reply = await channel.unary_unary(f"/{SERVICE}/Create")(_valid_body(), timeout=10)
        assert common_pb2.Order.FromString(reply).customer_id == "c-1"
    assert _failure_records(caplog) == [], "a client's bad bytes are not our error"


def test_locate_problem_walks_nested_messages() -> None:
    from google.protobuf.descriptor import Descriptor

    from shop.runtime.decoding import locate_problem

    # The stubs also allow upb's Descriptor type; at run time it is a Descriptor.
    descriptor = orders_pb2.CreateOrderRequest.DESCRIPTOR
    assert isinstance(descriptor, Descriptor)
    assert locate_problem(descriptor, _bad_utf8_in_second_sku()) == (
        "items[1].sku",
        "is not valid UTF-8",
    )
    # Parses fine field by field (a wire-level anomaly protobuf refuses elsewhere).
    assert locate_problem(descriptor, b"") == (
        "request",
        "is not a valid shop.v1.CreateOrderRequest message",
    )


# --- the log: first in full, then a count per interval ----------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_logs_the_first_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from shop.runtime.failures import RateLimitedLog

    clock = _Clock()
    events = RateLimitedLog(logging.getLogger("test.failures"), interval_s=10, clock=clock)
    error = ValueError("x")
    assert events.log("k", logging.ERROR, "boom", exc_info=error, extra={"error_id": "e1"})
    for _ in range(2213):  # the rest of a 10 s outage at one replica's rate
        clock.now += 0.004
        assert not events.log("k", logging.ERROR, "boom", exc_info=error)
    # A different kind is not hidden by the first.
    assert events.log("other", logging.WARNING, "db down")
    clock.now += 2  # past the interval: the next one closes the window first
    assert not events.log("k", logging.ERROR, "boom", exc_info=error)
    lines = [(r.getMessage(), getattr(r, "suppressed", None), r.exc_info is not None)
             for r in caplog.records]  # fmt: skip
    assert lines == [
        ("boom", None, True),
        ("db down", None, False),
        ("boom (repeated)", 2213, False),
    ]
    assert caplog.records[2].error_id == "e1"  # type: ignore[attr-defined]
    # The storm goes on: its next window counts the one event after the summary.
    clock.now += 10
    assert not events.log("k", logging.ERROR, "boom")
    assert caplog.records[-1].suppressed == 1  # type: ignore[attr-defined]
    # Quiet for a whole interval: forgotten, so the next one is logged in full again.
    clock.now += 25
    assert events.log("k", logging.ERROR, "boom")


async def test_rate_limited_log_flushes_the_summary_at_the_end_of_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In a service the summary comes when its interval ends, not with the next error."""
    from shop.runtime.failures import RateLimitedLog

    events = RateLimitedLog(logging.getLogger("test.failures"), interval_s=0.2)
    for _ in range(5):
        events.log("k", logging.WARNING, "db down")
    assert len(caplog.records) == 1

    for _ in range(250):  # wait for the timer, up to 5 s
        if len(caplog.records) > 1:
            break
        await asyncio.sleep(0.02)
    assert caplog.records[1].suppressed == 4  # type: ignore[attr-defined]


def test_error_id_is_the_same_for_the_same_bug_only() -> None:
    from shop.runtime.failures import error_id

    def catch(function: Any) -> BaseException:
        try:
            function()
        except Exception as error:
            return error
        raise AssertionError("did not raise")

    first, again = catch(_broken), catch(_broken)
    assert error_id(first) == error_id(again)
    empty: dict[str, int] = {}
    assert error_id(first) != error_id(catch(lambda: empty["missing"]))


def test_status_details_stay_small_for_thousands_of_violations() -> None:
    from shop.runtime.errors import FieldViolation, InvalidArgument

    error = InvalidArgument([FieldViolation(f"items[{i}].sku", "is required") for i in range(5000)])
    fields = [v.field for v in error.violations]
    assert fields[:20] == [f"items[{i}].sku" for i in range(20)]
    assert (
        fields[20:] == ["items"] and error.violations[20].description == "and 4980 more violations"
    )
    status = status_pb2.Status.FromString(error.status_details())
    assert len(status.SerializeToString()) < 2048
