"""Domain errors become gRPC statuses with google.rpc details, at every hop.

Unit checks of ``shop.runtime.errors`` first, then the real thing: handlers on an
in-process server built by ``serve`` raise, and a plain client reads the status and
its ``grpc-status-details-bin`` with grpc_status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from shop.runtime import Runtime
from shop.runtime.errors import (
    STATUS_DETAILS_KEY,
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    ReplayedStatus,
    ShopError,
    status_for,
)

from ..support.servers import StartServer, open_methods
from ..support.waiting import wait_until_async


def _decode(error: ShopError) -> status_pb2.Status:
    code, message, trailers = status_for(error)
    assert trailers[0][0] == STATUS_DETAILS_KEY
    status = status_pb2.Status.FromString(trailers[0][1])
    assert status.code == code.value[0]
    assert status.message == message
    return status


def test_invalid_argument_carries_bad_request() -> None:
    error = InvalidArgument(
        [FieldViolation("customer_id", "is required"), FieldViolation("items", "is empty")]
    )
    code, message, _ = status_for(error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "customer_id: is required; items: is empty"
    status = _decode(error)
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("customer_id", "is required"),
        ("items", "is empty"),
    ]


def test_not_found_carries_resource_info() -> None:
    status = _decode(NotFound("order", "abc"))
    assert status.code == code_pb2.NOT_FOUND
    info = error_details_pb2.ResourceInfo()
    assert status.details[0].Unpack(info)
    assert (info.resource_type, info.resource_name) == ("order", "abc")


def test_failed_precondition_carries_violations() -> None:
    error = FailedPrecondition([PreconditionViolation("STOCK", "ESP-001", "only 2 left")])
    status = _decode(error)
    assert status.code == code_pb2.FAILED_PRECONDITION
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[0].Unpack(failure)
    assert (failure.violations[0].type, failure.violations[0].subject) == ("STOCK", "ESP-001")


def test_aborted_has_code_and_no_details() -> None:
    status = _decode(Aborted("concurrent update"))
    assert status.code == code_pb2.ABORTED
    assert not status.details


def test_replayed_status_sends_the_recorded_details_unchanged() -> None:
    recorded = InvalidArgument.single("items[0].sku", "unknown").status_details()
    replay = ReplayedStatus(grpc.StatusCode.INVALID_ARGUMENT, "items[0].sku: unknown", recorded)
    code, _, trailers = status_for(replay)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers == ((STATUS_DETAILS_KEY, recorded),)
    # Without recorded details a replay still sends a consistent Status.
    bare = ReplayedStatus(grpc.StatusCode.FAILED_PRECONDITION, "rejected", None)
    assert _decode(bare).code == code_pb2.FAILED_PRECONDITION


# --- through real servers --------------------------------------------------------------

SERVICE = "test.v1.Errors"


def _errors_setup(
    downstream_address: str | None = None, runtimes: list[Runtime] | None = None
) -> Any:
    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        if runtimes is not None:
            runtimes.append(runtime)

        async def invalid(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise InvalidArgument.single("customer_id", "is required")

        async def missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise NotFound("order", request.decode())

        async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise RuntimeError("a bug")

        async def stream_then_fail(
            request: bytes, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            yield b"first"
            raise FailedPrecondition([PreconditionViolation("STATE", "x", "gone")])

        handlers = {
            "Invalid": grpc.unary_unary_rpc_method_handler(invalid),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Broken": grpc.unary_unary_rpc_method_handler(broken),
            "StreamThenFail": grpc.unary_stream_rpc_method_handler(stream_then_fail),
        }
        if downstream_address is not None:
            channel = runtime.channel(f"ipv4:{downstream_address}", SERVICE)
            downstream_missing = channel.unary_unary(f"/{SERVICE}/Missing")

            async def relay_missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                answer: bytes = await downstream_missing(request)
                return answer

            handlers["RelayMissing"] = grpc.unary_unary_rpc_method_handler(relay_missing)
        runtime.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        open_methods(runtime, SERVICE, handlers)
        yield (SERVICE,)

    return setup


@pytest.fixture
def outer_runtime() -> list[Runtime]:
    return []


@pytest.fixture
async def errors_channel(
    start_server: StartServer, outer_runtime: list[Runtime]
) -> AsyncIterator[grpc.aio.Channel]:
    inner = await start_server("inner", _errors_setup())
    outer = await start_server("outer", _errors_setup(inner.address, outer_runtime))
    async with grpc.aio.insecure_channel(outer.address) as channel:
        yield channel


async def _fail(channel: grpc.aio.Channel, method: str, request: bytes = b"") -> Any:
    call = channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _details_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    return status


async def test_domain_error_becomes_status_with_details(errors_channel: grpc.aio.Channel) -> None:
    error = await _fail(errors_channel, "Invalid")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "customer_id: is required"
    bad_request = error_details_pb2.BadRequest()
    assert _details_of(error).details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "customer_id"


async def test_downstream_failure_passes_up_with_code_and_details(
    errors_channel: grpc.aio.Channel,
) -> None:
    error = await _fail(errors_channel, "RelayMissing", b"order-42")
    # Not UNKNOWN: the inner hop's status travels up unchanged.
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "order 'order-42' not found"
    info = error_details_pb2.ResourceInfo()
    assert _details_of(error).details[0].Unpack(info)
    assert info.resource_name == "order-42"


async def test_unexpected_exception_is_internal_with_only_a_reference(
    errors_channel: grpc.aio.Channel,
) -> None:
    # Was UNKNOWN carrying the exception's text; now the text stays in the log (see
    # test_runtime_failures) and the client gets a reference to quote.
    error = await _fail(errors_channel, "Broken")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith("internal error (error_id=")
    assert "a bug" not in error.details()
    info = error_details_pb2.RequestInfo()
    assert _details_of(error).details[0].Unpack(info)
    assert info.request_id in error.details()


async def test_stream_error_after_first_message(errors_channel: grpc.aio.Channel) -> None:
    call = errors_channel.unary_stream(f"/{SERVICE}/StreamThenFail")(b"", timeout=10)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            received.append(message)
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = error_details_pb2.PreconditionFailure()
    assert _details_of(caught.value).details[0].Unpack(failure)
    assert failure.violations[0].subject == "x"


async def test_metrics_count_each_outcome_under_its_code(
    errors_channel: grpc.aio.Channel, outer_runtime: list[Runtime]
) -> None:
    await _fail(errors_channel, "Invalid")
    await _fail(errors_channel, "RelayMissing", b"o-1")
    await _fail(errors_channel, "Broken")
    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in errors_channel.unary_stream(f"/{SERVICE}/StreamThenFail")(b"", timeout=10):
            pass
    (runtime,) = outer_runtime
    registry = runtime.metrics.registry

    def handled(method: str, code: str, grpc_type: str = "unary") -> float | None:
        labels = {
            "grpc_type": grpc_type,
            "grpc_service": SERVICE,
            "grpc_method": method,
            "grpc_code": code,
        }
        return registry.get_sample_value("grpc_server_handled_total", labels)

    assert handled("Invalid", "INVALID_ARGUMENT") == 1
    assert handled("RelayMissing", "NOT_FOUND") == 1
    assert handled("Broken", "INTERNAL") == 1
    # A stream's outcome is recorded as its handler finishes, which can be just after
    # the client has read the status: wait for it rather than race it.
    await wait_until_async(
        lambda: handled("StreamThenFail", "FAILED_PRECONDITION", "server_stream") is not None,
        "the failed stream recorded as handled",
        30,
    )
    assert handled("StreamThenFail", "FAILED_PRECONDITION", "server_stream") == 1
    client = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Missing"}
    assert (
        registry.get_sample_value("grpc_client_handled_total", {**client, "grpc_code": "NOT_FOUND"})
        == 1
    )
    for method, grpc_type in [("Invalid", "unary"), ("StreamThenFail", "server_stream")]:
        labels = {"grpc_type": grpc_type, "grpc_service": SERVICE, "grpc_method": method}
        assert registry.get_sample_value("grpc_server_in_flight", labels) == 0
