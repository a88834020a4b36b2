"""Inventory fixtures: stores on a fresh database of each kind, and the service (its
production setup) on loopback through the shared runtime's own ``serve``
(interceptors, error mapping, health, access rules), in this test's event loop
(``start_server``). The tests call it as orders does, with an administrator's token for
SetStock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from shop.credentials import LocalCredentials
from shop.inventory.app import SERVICE_NAME, make_setup
from shop.inventory.settings import InventorySettings
from shop.inventory.store import InventoryStore
from shop.runtime.config import DatabaseSettings
from shop.runtime.database import Database
from shop.v1 import inventory_pb2_grpc

from ..support.auth import caller_metadata, channel_with, user_metadata
from ..support.servers import StartServer

SEED_STOCK = 100


@pytest.fixture
async def open_store(database_url: str) -> AsyncIterator[Callable[[], Awaitable[InventoryStore]]]:
    """Opens stores on one database, each with its own engines (as replicas have)."""
    databases: list[Database] = []

    async def open_one() -> InventoryStore:
        db = Database(database_url)
        databases.append(db)
        store = InventoryStore(db)
        await store.initialize(SEED_STOCK)
        return store

    try:
        yield open_one
    finally:
        for db in databases:
            await db.dispose()


@pytest.fixture
async def store(open_store: Callable[[], Awaitable[InventoryStore]]) -> InventoryStore:
    return await open_store()


@pytest.fixture
async def inventory_stub(
    database_url: str, start_server: StartServer, credentials: LocalCredentials
) -> AsyncIterator[inventory_pb2_grpc.InventoryStub]:
    """A client of an inventory server (seeded catalog) on a fresh database: the
    production setup, given settings for the test's database."""
    # The database is up before the server starts; a wait would mean a bug.
    settings = InventorySettings(SEED_STOCK, DatabaseSettings(database_url, wait_s=10.0))
    server = await start_server("inventory", make_setup(settings), pod_name="inventory-t0")
    async with channel_with(
        server.address,
        caller_metadata(credentials, "orders", SERVICE_NAME),
        user_metadata(credentials, "stock-admin", admin=True),
    ) as channel:
        yield inventory_pb2_grpc.InventoryStub(channel)
