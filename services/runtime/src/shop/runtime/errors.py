"""Domain errors and the one place that turns them into gRPC statuses.

Servicers raise :class:`ShopError` subclasses and never build statuses themselves.
The server interceptor calls :func:`abort_with` so every client mistake gets the
right code with ``google.rpc`` details (field names, failed preconditions), and a
downstream failure is passed up with its code and details instead of UNKNOWN.
Exceptions that are not ShopErrors are turned into one by ``shop.runtime.failures``
(UNAVAILABLE for an outage, INTERNAL for a bug), so clients never see UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# gRFC A6: a negative value tells the caller's channel not to retry this attempt.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
# A request with thousands of bad fields must not produce an error larger than the
# client accepts (RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT): the first ones
# tell the client what is wrong.
MAX_REPORTED_VIOLATIONS = 20
# The codes every shop channel retries (why CANCELLED is safe to retry: the comment in
# ``shop.runtime.channels``). Passed up from a downstream call, they were retried at
# that hop already, so they carry the pushback that stops retries above.
RETRYABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class ShopError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # Set on an UNAVAILABLE passed up from a downstream hop: that hop's own caller
    # (this service's channel) already retried, so ours must not multiply attempts.
    no_retry: bool = False

    def details(self) -> list[any_pb2.Any]:
        return []

    def status_details(self) -> bytes:
        """The serialized ``google.rpc.Status`` sent in the status-details trailer."""
        status = status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=str(self), details=self.details()
        )
        serialized: bytes = status.SerializeToString()
        return serialized

    def trailers(self) -> tuple[tuple[str, str | bytes], ...]:
        details: tuple[tuple[str, str | bytes], ...] = (
            (STATUS_DETAILS_KEY, self.status_details()),
        )
        return (*details, (RETRY_PUSHBACK_KEY, "-1")) if self.no_retry else details


class ReplayedStatus(ShopError):
    """A status recorded earlier, sent again as it was (e.g. to a retried request)."""

    def __init__(self, code: grpc.StatusCode, message: str, status_details: bytes | None) -> None:
        super().__init__(message)
        self.code = code
        self._status_details = status_details

    def status_details(self) -> bytes:
        return self._status_details or super().status_details()


@dataclass
class FieldViolation:
    field: str
    description: str


class InvalidArgument(ShopError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        if len(violations) > MAX_REPORTED_VIOLATIONS:
            kept, rest = violations[:MAX_REPORTED_VIOLATIONS], violations[MAX_REPORTED_VIOLATIONS:]
            # Named after the first violation left out, so the entry still points at
            # the part of the request that needs fixing.
            field = rest[0].field.split("[", 1)[0].split(".", 1)[0]
            violations = [*kept, FieldViolation(field, f"and {len(rest)} more violations")]
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])

    def details(self) -> list[any_pb2.Any]:
        request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [_pack(request)]


class NotFound(ShopError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, name: str) -> None:
        self.resource_type = resource_type
        self.name = name
        super().__init__(f"{resource_type} {name!r} not found")

    def details(self) -> list[any_pb2.Any]:
        return [
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=self.resource_type, resource_name=self.name
                )
            )
        ]


@dataclass
class PreconditionViolation:
    type: str
    subject: str
    description: str


class FailedPrecondition(ShopError):
    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, violations: list[PreconditionViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.subject}: {v.description}" for v in violations))

    def details(self) -> list[any_pb2.Any]:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.type, subject=v.subject, description=v.description
                )
                for v in self.violations
            ]
        )
        return [_pack(failure)]


class Aborted(ShopError):
    """A concurrent change won; the caller may retry the whole operation."""

    code = grpc.StatusCode.ABORTED


class Unavailable(ShopError):
    """Something this call needs (a database, a downstream service) cannot be reached.

    The message names the dependency and nothing else: driver text carries host
    names, ports and SQL, none of which a client can act on."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, dependency: str, *, no_retry: bool = False) -> None:
        self.dependency = dependency
        self.no_retry = no_retry
        super().__init__(f"{dependency} is unavailable; try again later")

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason="DEPENDENCY_UNAVAILABLE", domain="shop", metadata={"dependency": self.dependency}
        )
        return [_pack(info)]


class Internal(ShopError):
    """A bug. The client gets only a reference to quote: the trace id, and an error id
    that the log line carrying the stack also has."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, error_id: str, trace_id: str | None = None) -> None:
        self.error_id = error_id
        self.trace_id = trace_id
        reference = f"error_id={error_id}"
        if trace_id is not None:
            reference = f"trace_id={trace_id}, {reference}"
        super().__init__(f"internal error ({reference})")

    def details(self) -> list[any_pb2.Any]:
        return [_pack(error_details_pb2.RequestInfo(request_id=self.trace_id or self.error_id))]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_for(
    error: ShopError,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    return error.code, str(error), error.trailers()


def status_details_of(error: grpc.aio.AioRpcError) -> bytes | None:
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return bytes(value)
    return None


async def abort_with(
    context: grpc.aio.ServicerContext,
    error: BaseException,
    extra: tuple[tuple[str, str | bytes], ...] = (),
) -> None:
    """Aborts the call for a domain error or a failed downstream call; else re-raises.
    ``extra``: more trailers to send (the load report): an abort sends the trailers it
    is given, and what is set after it is lost.

    (``shop.runtime.failures.Failures.answer`` turns any other exception into a
    ShopError first.)"""
    if isinstance(error, ShopError):
        code, message, trailers = status_for(error)
        await context.abort(code, message, (*trailers, *extra))
    if isinstance(error, grpc.aio.AioRpcError):
        passed: tuple[tuple[str, str | bytes], ...] = tuple(
            (k, v) for k, v in (error.trailing_metadata() or ()) if k == STATUS_DETAILS_KEY
        )
        if error.code() in RETRYABLE_CODES:
            # Our channel already retried the hop that failed; a retry by our caller
            # would repeat all of that (attempts multiply with every hop).
            passed = (*passed, (RETRY_PUSHBACK_KEY, "-1"))
        await context.abort(error.code(), error.details() or "", (*passed, *extra))
    raise error
