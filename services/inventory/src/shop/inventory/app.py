"""Wires the inventory service into the shared runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from shop.api import services
from shop.inventory.servicer import InventoryServicer
from shop.inventory.store import InventoryStore
from shop.runtime import Runtime
from shop.runtime.auth import ADMIN, Access, callers
from shop.runtime.config import SEED_STOCK
from shop.runtime.database import open_database
from shop.v1 import inventory_pb2_grpc

SERVICE_NAME = services.INVENTORY
# Who may call what. Reservations are the orders saga's; the catalog is read by the
# gateway (ListProducts) and orders; stock administration needs an administrator's
# bearer token (the shop.admin scope), whoever's connection it arrives on.
ACCESS: dict[str, Access] = {
    "Reserve": callers("orders"),
    "Release": callers("orders"),
    "ListProducts": callers("gateway", "orders"),
    "SetStock": ADMIN,
}


@asynccontextmanager
async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
    import os

    seed_stock = SEED_STOCK.read(os.environ)
    db = await open_database("inventory")
    store = InventoryStore(db)
    await store.initialize(seed_stock)
    inventory_pb2_grpc.add_InventoryServicer_to_server(InventoryServicer(store), runtime.server)
    runtime.access.protect(SERVICE_NAME, ACCESS)
    try:
        yield (SERVICE_NAME,)
    finally:
        await db.dispose()
