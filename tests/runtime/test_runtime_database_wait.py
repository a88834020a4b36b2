"""At start-up a service waits for its database instead of crashing (pods start together)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from shop.local.addresses import free_port
from shop.local.postgres import PostgresServer
from shop.runtime.config import DatabaseSettings, StartupError
from shop.runtime.database import open_database, sql


@asynccontextmanager
async def _forwarder(listen_port: int, target_port: int) -> AsyncIterator[None]:
    """A TCP relay to PostgreSQL: the database 'comes up' when this starts listening."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    writers: list[asyncio.StreamWriter] = []

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        writers.extend((client_w, server_w))
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(relay, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def _until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.postgres
async def test_waits_for_a_database_that_comes_up_late(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    database = postgres_server.create_database("wait_late")
    port = free_port()
    url = database.replace(f":{postgres_server.port}/", f":{port}/")
    caplog.set_level(logging.WARNING, logger="shop.runtime.database")
    opening = asyncio.create_task(open_database(DatabaseSettings(url, wait_s=60)))
    # Refused at first: the service keeps trying rather than giving up.
    await _until(lambda: len(caplog.records) >= 2)
    assert not opening.done()
    assert "waiting for the database" in caplog.records[0].getMessage()
    async with _forwarder(port, postgres_server.port):
        db = await asyncio.wait_for(opening, timeout=30)
        try:
            async with db.read() as tx:
                assert await tx.fetchrow(sql("SELECT 1")) == (1,)
        finally:
            await db.dispose()


async def test_gives_up_with_a_clear_error() -> None:
    url = f"postgresql+asyncpg://shop@127.0.0.1:{free_port()}/shop"
    started = time.monotonic()
    with pytest.raises(StartupError, match=r"database not reachable after 0\.5 s \(\d+ attempts\)"):
        await open_database(DatabaseSettings(url, wait_s=0.5))
    assert time.monotonic() - started < 20


def test_sqlite_needs_no_wait(tmp_path: object) -> None:
    async def main() -> None:
        db = await open_database(
            DatabaseSettings.from_env(
                "inventory", {"SHOP_DATA_DIR": str(tmp_path), "SHOP_DATABASE_WAIT_S": "0"}
            )
        )
        await db.dispose()

    asyncio.run(main())


def test_the_process_exits_with_one_line(pod_env: Callable[..., dict[str, str]]) -> None:
    # What the pod log shows when the database never came: the reason, no traceback.
    env = pod_env(
        DATABASE_URL=f"postgresql://shop@127.0.0.1:{free_port()}/shop",
        SHOP_DATABASE_WAIT_S="0.3",
        SHOP_LOG_LEVEL="error",
    )
    result = subprocess.run(
        [sys.executable, "-m", "shop.inventory"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]], (
        result.stderr
    )
    assert result.stderr.startswith("inventory: cannot start: database not reachable after 0.3 s")
