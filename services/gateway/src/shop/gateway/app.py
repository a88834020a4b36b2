"""Wires the gateway into the shared runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from shop.api import services
from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.api.services import ORDERS as ORDERS_SERVICE
from shop.gateway.servicer import GatewayServicer
from shop.gateway.settings import GatewaySettings
from shop.runtime import Runtime
from shop.runtime.auth import END_USER
from shop.runtime.server import ServiceSetup
from shop.v1 import gateway_pb2, gateway_pb2_grpc, inventory_pb2_grpc, orders_pb2_grpc

SERVICE_NAME = services.GATEWAY
# The public API: every method needs an end user's bearer token.
ACCESS = {
    method.name: END_USER for method in gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods
}


def make_setup(settings: GatewaySettings) -> ServiceSetup:
    """The gateway wired with ``settings``: what a replica runs (``setup``), and what
    tests run with settings of their own."""

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        orders = orders_pb2_grpc.OrdersStub(runtime.channel(settings.orders_target, ORDERS_SERVICE))
        inventory = inventory_pb2_grpc.InventoryStub(
            runtime.channel(settings.inventory_target, INVENTORY_SERVICE)
        )
        servicer = GatewayServicer(orders, inventory, settings.streams)
        gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, runtime.server)
        # WatchOrder streams end OK when the drain delay is over, not cut by the stop.
        runtime.on_drain(servicer.end_streams)
        runtime.access.protect(SERVICE_NAME, ACCESS)
        yield (SERVICE_NAME,)

    return setup


def setup(runtime: Runtime) -> AbstractAsyncContextManager[Sequence[str]]:
    """The service as its process runs it: settings read from the environment at start."""
    return make_setup(GatewaySettings.from_env())(runtime)
