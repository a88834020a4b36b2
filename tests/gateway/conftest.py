"""Gateway fixtures: the real service setups (``make_setup`` of each app) run by the
runtime's ``serve`` on loopback in this test's event loop (``start_server``), with
settings read from the environment as in a pod and the targets of the test's ports.

``edge``: a gateway whose downstream services do not exist, so only what the gateway
itself decides can succeed. ``chain``: gateway -> orders -> inventory on SQLite.
Gateway calls carry customer ``c1``'s bearer token (``CUSTOMER``); inventory is
called as orders calls it, with an administrator's token for SetStock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.credentials import LocalCredentials
from shop.gateway.app import make_setup as gateway_setup
from shop.gateway.settings import GatewaySettings
from shop.inventory.app import make_setup as inventory_setup
from shop.inventory.settings import InventorySettings
from shop.local.addresses import free_port
from shop.orders.app import make_setup as orders_setup
from shop.orders.settings import OrdersSettings
from shop.v1 import gateway_pb2_grpc, inventory_pb2_grpc

from ..support.auth import CUSTOMER, caller_metadata, channel_with, user_metadata
from ..support.servers import StartServer


# The pod environment of these tests: SQLite files under the test's folder, a small
# seed stock. The fixtures below read their settings from it as a replica does, and
# the tests that start services through ``shop.<service>.app.setup`` get it too.
@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOP_SEED_STOCK", "100")
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
async def edge_address(start_server: StartServer) -> str:
    """The address of a gateway whose downstream services do not exist."""
    settings = dataclasses.replace(
        GatewaySettings.from_env(),
        orders_target=f"127.0.0.1:{free_port()}",
        inventory_target=f"127.0.0.1:{free_port()}",
    )
    server = await start_server("gateway", gateway_setup(settings), pod_name="gateway-t0")
    return server.address


@pytest.fixture
async def edge(
    edge_address: str, credentials: LocalCredentials
) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    async with channel_with(edge_address, user_metadata(credentials, CUSTOMER)) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


@dataclass
class Chain:
    gateway: gateway_pb2_grpc.GatewayStub
    inventory: inventory_pb2_grpc.InventoryStub


@pytest.fixture
async def chain(start_server: StartServer, credentials: LocalCredentials) -> AsyncIterator[Chain]:
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("inventory", "orders", "gateway")}
    inventory_settings = InventorySettings.from_env()
    orders_settings = dataclasses.replace(
        OrdersSettings.from_env(), inventory_target=addresses["inventory"]
    )
    gateway_settings = dataclasses.replace(
        GatewaySettings.from_env(),
        orders_target=addresses["orders"],
        inventory_target=addresses["inventory"],
    )
    for name, setup in (
        ("inventory", inventory_setup(inventory_settings)),
        ("orders", orders_setup(orders_settings)),
        ("gateway", gateway_setup(gateway_settings)),
    ):
        await start_server(name, setup, listen_addr=addresses[name], pod_name=f"{name}-t0")
    async with (
        channel_with(addresses["gateway"], user_metadata(credentials, CUSTOMER)) as gateway,
        channel_with(
            addresses["inventory"],
            caller_metadata(credentials, "orders", INVENTORY_SERVICE),
            user_metadata(credentials, "stock-admin", admin=True),
        ) as inventory,
    ):
        yield Chain(
            gateway_pb2_grpc.GatewayStub(gateway), inventory_pb2_grpc.InventoryStub(inventory)
        )
