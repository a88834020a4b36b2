"""What a failed call says beyond its code: the google.rpc.Status in its trailers
(``grpc-status-details-bin``) and the typed details packed in it."""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The call's google.rpc.Status; fails if it has none."""
    status = rpc_status.from_call(error)  # also checks code and message agree
    assert status is not None, f"no status details on {error.code()}: {error.details()}"
    return status


def details_of(error: grpc.aio.AioRpcError, kind: type[M]) -> list[M]:
    """Every detail of type ``kind``; fails if there is none."""
    found = []
    for detail in rich_status(error).details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found.append(message)
    assert found, f"no {kind.__name__} in the details of {error.code()}"
    return found


def detail_of(error: grpc.aio.AioRpcError, kind: type[M]) -> M:
    """The first detail of type ``kind``; fails if there is none."""
    return details_of(error, kind)[0]
