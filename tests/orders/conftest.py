"""Orders fixtures: an orders server and an inventory server on loopback, run by the
shared runtime's ``serve`` in this test's event loop (``start_server``), on a fresh
database of each kind.

Both are the production setups (``make_setup`` of each app, database wait and the
orders reconciler included) given settings for the test's database and ports. The
orders server reaches inventory through ``Runtime.channel`` (the production
channel: round_robin, health checking, retries, deadline propagation). Tests get
the ``OrderPlacement`` too, to drive a reconciler of their own and look at stored
state; the server's own reconciler only touches orders older than the Reserve
timeout plus a margin, which no test waits for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.api.services import ORDERS as ORDERS_SERVICE
from shop.credentials import LocalCredentials
from shop.inventory.app import make_setup as inventory_setup
from shop.inventory.servicer import InventoryServicer
from shop.inventory.settings import InventorySettings
from shop.inventory.store import InventoryStore
from shop.local.addresses import free_port
from shop.orders.app import make_setup as orders_setup
from shop.orders.placement import OrderPlacement
from shop.orders.settings import OrdersSettings
from shop.orders.store import OrderRecord, OrderStore
from shop.runtime.config import DatabaseSettings
from shop.runtime.streams import StreamConfig
from shop.v1 import inventory_pb2, inventory_pb2_grpc, orders_pb2_grpc

from ..support.auth import caller_metadata, channel_with, user_metadata
from ..support.servers import StartServer

SEED_STOCK = 100
# The test's database is up before the servers start; a wait would mean a bug.
DATABASE_WAIT_S = 10.0
# WatchOrder events within a test's patience (a replica polls every 0.5 s).
WATCH_INTERVAL_S = 0.05

ServicerFactory = Callable[[InventoryStore], InventoryServicer]


@dataclass
class Shop:
    """Orders + inventory on loopback; ``orders``/``inventory`` are client stubs."""

    database_url: str
    inventory_port: int
    orders: orders_pb2_grpc.OrdersStub
    inventory: inventory_pb2_grpc.InventoryStub
    placement: OrderPlacement
    _start_server: StartServer
    _inventory_up: bool = field(default=False)

    @property
    def store(self) -> OrderStore:
        return self.placement.store

    async def start_inventory(self, servicer: ServicerFactory = InventoryServicer) -> None:
        assert not self._inventory_up
        await self._start_server(
            "inventory",
            inventory_setup(
                InventorySettings(SEED_STOCK, DatabaseSettings(self.database_url, DATABASE_WAIT_S)),
                servicer=servicer,
            ),
            listen_addr=f"127.0.0.1:{self.inventory_port}",
            pod_name="inventory-t0",
        )
        self._inventory_up = True

    async def stock(self, sku: str) -> int:
        reply = await self.inventory.ListProducts(
            inventory_pb2.ListProductsRequest(page_size=200), timeout=10
        )
        stock: int = next(p.stock for p in reply.products if p.sku == sku)
        return stock

    async def set_stock(self, sku: str, stock: int, price_cents: int = 250) -> None:
        await self.inventory.SetStock(
            inventory_pb2.SetStockRequest(sku=sku, stock=stock, price_cents=price_cents),
            timeout=10,
        )

    async def record(self, key: str) -> OrderRecord:
        order = await self.store.get_by_key(key)
        assert order is not None, f"no order for key {key!r}"
        return order


StartShop = Callable[..., Awaitable[Shop]]


@pytest.fixture
async def start_shop(
    database_url: str, start_server: StartServer, credentials: LocalCredentials
) -> AsyncIterator[StartShop]:
    """``await start_shop(inventory_up=True, timeout_s=5.0, servicer=InventoryServicer)``."""
    async with AsyncExitStack() as stack:

        async def start(
            inventory_up: bool = True,
            timeout_s: float = 5.0,
            servicer: ServicerFactory = InventoryServicer,
        ) -> Shop:
            inventory_port = free_port()
            placements: list[OrderPlacement] = []
            settings = OrdersSettings(
                inventory_target=f"127.0.0.1:{inventory_port}",
                database=DatabaseSettings(database_url, DATABASE_WAIT_S),
                downstream_timeout_s=timeout_s,
                streams=StreamConfig.from_env(),
                watch_interval_s=WATCH_INTERVAL_S,
            )
            orders_server = await start_server(
                "orders",
                orders_setup(settings, on_wired=lambda wired: placements.append(wired.placement)),
                pod_name="orders-t0",
            )
            # The tests call orders as the gateway does, and inventory as orders and an
            # administrator (for SetStock) do.
            orders_channel = await stack.enter_async_context(
                channel_with(
                    orders_server.address,
                    caller_metadata(credentials, "gateway", ORDERS_SERVICE),
                )
            )
            inventory_channel = await stack.enter_async_context(
                channel_with(
                    f"127.0.0.1:{inventory_port}",
                    caller_metadata(credentials, "orders", INVENTORY_SERVICE),
                    user_metadata(credentials, "stock-admin", admin=True),
                    options=[
                        ("grpc.initial_reconnect_backoff_ms", 50),
                        ("grpc.max_reconnect_backoff_ms", 200),
                    ],
                )
            )
            shop = Shop(
                database_url,
                inventory_port,
                orders_pb2_grpc.OrdersStub(orders_channel),
                inventory_pb2_grpc.InventoryStub(inventory_channel),
                placements[0],
                start_server,
            )
            if inventory_up:
                await shop.start_inventory(servicer)
            return shop

        yield start


@pytest.fixture
async def shop(start_shop: StartShop) -> Shop:
    return await start_shop()
