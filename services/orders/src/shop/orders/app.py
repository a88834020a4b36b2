"""Wires the orders service into the shared runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from shop.api import services
from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.orders.placement import OrderPlacement
from shop.orders.reconciler import Reconciler
from shop.orders.servicer import OrdersServicer
from shop.orders.store import OrderStore
from shop.orders.watch import OrderWatchHub
from shop.runtime import Runtime
from shop.runtime.auth import callers
from shop.runtime.config import INVENTORY_TARGET, ChannelConfig
from shop.runtime.database import open_database
from shop.runtime.streams import StreamConfig
from shop.v1 import inventory_pb2_grpc, orders_pb2, orders_pb2_grpc

SERVICE_NAME = services.ORDERS
# Internal API: only the gateway calls it, naming the customer it acts for.
ACCESS = {
    method.name: callers("gateway")
    for method in orders_pb2.DESCRIPTOR.services_by_name["Orders"].methods
}
RECONCILE_INTERVAL_S = 5.0
# Reserve is capped at SHOP_DOWNSTREAM_TIMEOUT_S; anything PENDING for much longer
# than that has no request working on it any more.
STALE_MARGIN_S = 25.0
# How often the replica's one watch poll looks for changes of watched orders: the
# most a WatchOrder event lags the change (it costs one query per interval, however
# many streams are open).
WATCH_INTERVAL_S = 0.5


@asynccontextmanager
async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
    import os

    channel_config = ChannelConfig.from_env()
    inventory_target = INVENTORY_TARGET.read(os.environ)
    streams = StreamConfig.from_env()
    db = await open_database("orders")
    store = OrderStore(db)
    await store.initialize()
    inventory = inventory_pb2_grpc.InventoryStub(
        runtime.channel(inventory_target, INVENTORY_SERVICE)
    )
    placement = OrderPlacement(store, inventory, channel_config.downstream_timeout_s)
    hub = OrderWatchHub(store, WATCH_INTERVAL_S)
    servicer = OrdersServicer(placement, hub=hub, streams=streams)
    orders_pb2_grpc.add_OrdersServicer_to_server(servicer, runtime.server)
    # WatchOrder streams end OK when the drain delay is over, not cut by the stop.
    runtime.on_drain(servicer.end_streams)
    runtime.access.protect(SERVICE_NAME, ACCESS)
    reconciler = Reconciler(
        placement, RECONCILE_INTERVAL_S, channel_config.downstream_timeout_s + STALE_MARGIN_S
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
