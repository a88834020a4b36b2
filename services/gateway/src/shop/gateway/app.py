"""Wires the gateway into the shared runtime."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from shop.api import services
from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.api.services import ORDERS as ORDERS_SERVICE
from shop.gateway.servicer import GatewayServicer
from shop.runtime import Runtime
from shop.runtime.auth import END_USER
from shop.runtime.config import INVENTORY_TARGET, ORDERS_TARGET
from shop.v1 import gateway_pb2, gateway_pb2_grpc, inventory_pb2_grpc, orders_pb2_grpc

SERVICE_NAME = services.GATEWAY
# The public API: every method needs an end user's bearer token.
ACCESS = {
    method.name: END_USER for method in gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods
}


@asynccontextmanager
async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
    orders = orders_pb2_grpc.OrdersStub(
        runtime.channel(ORDERS_TARGET.read(os.environ), ORDERS_SERVICE)
    )
    inventory = inventory_pb2_grpc.InventoryStub(
        runtime.channel(INVENTORY_TARGET.read(os.environ), INVENTORY_SERVICE)
    )
    servicer = GatewayServicer(orders, inventory)
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, runtime.server)
    # WatchOrder streams end OK when the drain delay is over, not cut by the stop.
    runtime.on_drain(servicer.end_streams)
    runtime.access.protect(SERVICE_NAME, ACCESS)
    yield (SERVICE_NAME,)
