"""Wires the inventory service into the shared runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from shop.api import services
from shop.inventory.servicer import InventoryServicer
from shop.inventory.settings import InventorySettings
from shop.inventory.store import InventoryStore
from shop.runtime import Runtime
from shop.runtime.auth import ADMIN, Access, callers
from shop.runtime.database import open_database
from shop.runtime.server import ServiceSetup
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


def make_setup(
    settings: InventorySettings,
    *,
    servicer: Callable[[InventoryStore], InventoryServicer] = InventoryServicer,
) -> ServiceSetup:
    """The inventory service wired with ``settings``: what a replica runs (``setup``),
    and what tests run with settings of their own. ``servicer`` builds the servicer
    on the store (tests substitute one that pauses or fails calls)."""

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        db = await open_database(settings.database)
        store = InventoryStore(db)
        await store.initialize(settings.seed_stock)
        inventory_pb2_grpc.add_InventoryServicer_to_server(servicer(store), runtime.server)
        runtime.access.protect(SERVICE_NAME, ACCESS)
        try:
            yield (SERVICE_NAME,)
        finally:
            await db.dispose()

    return setup


def setup(runtime: Runtime) -> AbstractAsyncContextManager[Sequence[str]]:
    """The service as its process runs it: settings read from the environment at start."""
    return make_setup(InventorySettings.from_env())(runtime)
