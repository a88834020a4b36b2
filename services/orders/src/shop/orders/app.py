"""Wires the orders service into the shared runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from shop.api import services
from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.orders.placement import OrderPlacement
from shop.orders.reconciler import Reconciler
from shop.orders.servicer import OrdersServicer
from shop.orders.settings import OrdersSettings
from shop.orders.store import OrderStore
from shop.orders.watch import OrderWatchHub
from shop.runtime import Runtime
from shop.runtime.auth import callers
from shop.runtime.database import open_database
from shop.runtime.server import ServiceSetup
from shop.v1 import inventory_pb2_grpc, orders_pb2, orders_pb2_grpc

SERVICE_NAME = services.ORDERS
# Internal API: only the gateway calls it, naming the customer it acts for.
ACCESS = {
    method.name: callers("gateway")
    for method in orders_pb2.DESCRIPTOR.services_by_name["Orders"].methods
}


@dataclass(frozen=True)
class OrdersWiring:
    """The parts ``make_setup`` wired, for tests that drive one of them directly."""

    placement: OrderPlacement
    hub: OrderWatchHub


def make_setup(
    settings: OrdersSettings,
    *,
    on_wired: Callable[[OrdersWiring], object] | None = None,
) -> ServiceSetup:
    """The orders service wired with ``settings``: what a replica runs (``setup``),
    and what tests run with settings of their own. ``on_wired`` gets the order saga
    and the change feed once they are wired, for tests that drive the reconciler,
    read the store or watch the feed's queries."""

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        db = await open_database(settings.database)
        store = OrderStore(db)
        await store.initialize()
        inventory = inventory_pb2_grpc.InventoryStub(
            runtime.channel(settings.inventory_target, INVENTORY_SERVICE)
        )
        placement = OrderPlacement(store, inventory, settings.downstream_timeout_s)
        hub = OrderWatchHub(store, settings.watch_interval_s)
        if on_wired is not None:
            on_wired(OrdersWiring(placement, hub))
        servicer = OrdersServicer(placement, hub=hub, streams=settings.streams)
        orders_pb2_grpc.add_OrdersServicer_to_server(servicer, runtime.server)
        # WatchOrder streams end OK when the drain delay is over, not cut by the stop.
        runtime.on_drain(servicer.end_streams)
        runtime.access.protect(SERVICE_NAME, ACCESS)
        reconciler = Reconciler(
            placement,
            settings.reconcile_interval_s,
            settings.downstream_timeout_s + settings.stale_margin_s,
        )
        task = asyncio.get_running_loop().create_task(reconciler.run_forever())
        try:
            yield (SERVICE_NAME,)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await hub.close()
            await db.dispose()

    return setup


def setup(runtime: Runtime) -> AbstractAsyncContextManager[Sequence[str]]:
    """The service as its process runs it: settings read from the environment at start."""
    return make_setup(OrdersSettings.from_env())(runtime)
