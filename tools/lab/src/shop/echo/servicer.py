"""The Echo handler, shared by the runtime and the bare server so both do the same work."""

from __future__ import annotations

import grpc

from shop.api import services
from shop.v1 import echo_pb2, echo_pb2_grpc

SERVICE_NAME = services.ECHO


class EchoServicer(echo_pb2_grpc.EchoServicer):
    async def Echo(
        self, request: echo_pb2.EchoMessage, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoMessage:
        # The request object goes straight back: no allocation beyond what gRPC does.
        return request
