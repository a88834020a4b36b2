"""Wires the Echo service into the shared runtime, the same way every shop service is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from shop.echo.servicer import SERVICE_NAME, EchoServicer
from shop.runtime import Runtime
from shop.runtime.auth import OPEN
from shop.v1 import echo_pb2_grpc


@asynccontextmanager
async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(), runtime.server)
    # A benchmark hop measuring gRPC itself: open, like a health check.
    runtime.access.protect(SERVICE_NAME, {"Echo": OPEN})
    yield (SERVICE_NAME,)
