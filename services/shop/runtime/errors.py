"""Domain errors and the one place that turns them into gRPC statuses.

Servicers raise :class:`ShopError` subclasses and never build statuses themselves.
The server interceptor calls :func:`abort_with` so every client mistake gets the
right code with ``google.rpc`` details (field names, failed preconditions), and a
downstream failure is passed up with its code and details instead of UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ShopError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def details(self) -> list[any_pb2.Any]:
        return []

    def status_details(self) -> bytes:
        """The serialized ``google.rpc.Status`` sent in the status-details trailer."""
        status = status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=str(self), details=self.details()
        )
        serialized: bytes = status.SerializeToString()
        return serialized


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


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_for(error: ShopError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    return error.code, str(error), ((STATUS_DETAILS_KEY, error.status_details()),)


def status_details_of(error: grpc.aio.AioRpcError) -> bytes | None:
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return bytes(value)
    return None


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    """Aborts the call for a domain error or a failed downstream call; else re-raises."""
    if isinstance(error, ShopError):
        code, message, trailers = status_for(error)
        await context.abort(code, message, trailers)
    if isinstance(error, grpc.aio.AioRpcError):
        trailers = tuple(
            (k, v) for k, v in (error.trailing_metadata() or ()) if k == STATUS_DETAILS_KEY
        )
        await context.abort(error.code(), error.details() or "", trailers)
    raise error
