"""Storage failures as clients see them, on each database kind: the real inventory and
orders services (their own setups, run by the runtime's ``serve`` in this event loop),
a real grpcio client, a real database.

- A page token with the right keys but a forged value (a dict, a list, a huge number)
  is the client's mistake: INVALID_ARGUMENT naming ``page_token``, never a database
  error with the SQL statement and its parameters in the message.
- A database outage is UNAVAILABLE naming the database, without the driver's text,
  with one warning in the log however many calls fail (and no traceback at all); the
  service answers again as soon as the database is back. On PostgreSQL the outage is
  a cut between service and server (refused connects, dropped pooled connections);
  on SQLite, another process holding the write lock past busy_timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.api.services import ORDERS as ORDERS_SERVICE
from shop.credentials import LocalCredentials
from shop.inventory.app import setup as inventory_setup
from shop.local.addresses import free_port
from shop.orders.app import setup as orders_setup
from shop.runtime import database
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc, orders_pb2, orders_pb2_grpc

from ..support.auth import caller_metadata, channel_with
from ..support.servers import StartServer
from ..support.tcp_proxy import TcpProxy

# What driver and SQL text look like; none of it may reach a client.
DRIVER_WORDS = ("SELECT", "sqlite", "asyncpg", "Errno", "Connect call", "127.0.0.1", "locked")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOP_SEED_STOCK", "100")
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path / "data"))
    # Orders is started for its ListOrders only; its inventory never answers.
    monkeypatch.setenv("SHOP_INVENTORY_TARGET", f"127.0.0.1:{free_port()}")


def _token(position: dict[str, object]) -> str:
    raw = json.dumps(position).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_VALUES = {"dict": {"$gt": ""}, "list": ["a", 1], "huge": 10**30, "nul": "ESP\x00"}


@pytest.mark.parametrize("forged", FORGED_VALUES.values(), ids=FORGED_VALUES.keys())
async def test_forged_page_token_values_are_invalid_argument(
    database_url: str,
    start_server: StartServer,
    credentials: LocalCredentials,
    monkeypatch: pytest.MonkeyPatch,
    forged: object,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    inventory = await start_server("inventory", inventory_setup)
    orders = await start_server("orders", orders_setup)
    async with (
        channel_with(inventory.address, caller_metadata(credentials, "orders", INVENTORY_SERVICE))
        as inventory_channel,
        channel_with(orders.address, caller_metadata(credentials, "gateway", ORDERS_SERVICE))
        as orders_channel,
    ):  # fmt: skip
        calls = [
            inventory_pb2_grpc.InventoryStub(inventory_channel).ListProducts(
                inventory_pb2.ListProductsRequest(page_token=_token({"sku": forged})), timeout=10
            ),
            orders_pb2_grpc.OrdersStub(orders_channel).ListOrders(
                orders_pb2.ListCustomerOrdersRequest(
                    customer_id="c-1", page_token=_token({"c": forged, "o": "x"})
                ),
                timeout=10,
            ),
            orders_pb2_grpc.OrdersStub(orders_channel).ListOrders(
                orders_pb2.ListCustomerOrdersRequest(
                    customer_id="c-1", page_token=_token({"c": "2026", "o": forged})
                ),
                timeout=10,
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = caught.value
            assert (error.code(), error.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_token: is not a token this service issued",
            )
            status = rpc_status.from_call(error)
            assert status is not None


# --- outages -------------------------------------------------------------------------


@dataclass
class Outage:
    url: str
    begin: Callable[[], object]  # what they return (a proxy, say) is not used
    end: Callable[[], object]


@pytest.fixture
def outage(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Outage]:
    if database_url.startswith("postgresql"):
        proxy = TcpProxy.for_url(database_url).start()
        try:
            yield Outage(proxy.url_through(database_url), proxy.cut, proxy.restore)
        finally:
            proxy.close()
        return
    # A writer elsewhere keeps the lock; ours give up after busy_timeout.
    monkeypatch.setattr(database, "_SQLITE_BUSY_TIMEOUT_MS", 200)
    path = database_url.split(":///", 1)[1]
    holder: list[sqlite3.Connection] = []

    def begin() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        holder.append(connection)

    def end() -> None:
        while holder:
            connection = holder.pop()
            connection.rollback()
            connection.close()

    try:
        yield Outage(database_url, begin, end)
    finally:
        end()


def _reserve(sku: str = "ESP-001") -> inventory_pb2.ReserveRequest:
    return inventory_pb2.ReserveRequest(
        reservation_id=f"r-{uuid.uuid4()}", items=[common_pb2.OrderItem(sku=sku, quantity=1)]
    )


@contextmanager
def _log_records(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    start = len(caplog.records)
    yield records
    records.extend(caplog.records[start:])


@pytest.fixture
async def inventory(
    outage: Outage,
    start_server: StartServer,
    credentials: LocalCredentials,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[inventory_pb2_grpc.InventoryStub]:
    monkeypatch.setenv("DATABASE_URL", outage.url)
    server = await start_server("inventory", inventory_setup)
    async with channel_with(
        server.address, caller_metadata(credentials, "orders", INVENTORY_SERVICE)
    ) as channel:
        yield inventory_pb2_grpc.InventoryStub(channel)


async def test_database_outage_is_unavailable_and_logged_once(
    inventory: inventory_pb2_grpc.InventoryStub,
    outage: Outage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await inventory.Reserve(_reserve(), timeout=10)  # the pool holds live connections
    calls = 30 if outage.url.startswith("postgresql") else 8
    outage.begin()
    with _log_records(caplog) as records:
        for _ in range(calls):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await inventory.Reserve(_reserve(), timeout=10)
            error = caught.value
            assert (error.code(), error.details()) == (
                grpc.StatusCode.UNAVAILABLE,
                "the inventory database is unavailable; try again later",
            )
            assert not any(word in error.details() for word in DRIVER_WORDS)
    # One warning for the whole outage (the rest are counted, then summarized), and
    # not a single traceback from any logger.
    assert [r for r in records if r.exc_info] == []
    noted = [r for r in records if r.levelno >= logging.WARNING]
    assert [(r.name, r.getMessage()) for r in noted] == [
        ("shop.runtime.failures", "the inventory database is unavailable")
    ]
    outage.end()
    # Back as soon as the database is: the pool reconnects on the next call.
    for _ in range(100):
        try:
            reply = await inventory.Reserve(_reserve(), timeout=10)
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("inventory did not recover within 10 s")
    assert reply.total_cents > 0
