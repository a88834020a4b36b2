"""Which database errors are outages (UNAVAILABLE, worth a retry) and which are not
(a wrong statement is a bug: INTERNAL), classified from the errors real databases
raise, on each kind."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import pytest

from shop.local.addresses import free_port
from shop.runtime import database
from shop.runtime.database import Database, connection_problem, sql

TERMINATE_SLEEPERS = sql(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()"
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    opened = Database(database_url)
    try:
        yield opened
    finally:
        await opened.dispose()


async def _error_of(work: object) -> BaseException:
    try:
        await work  # type: ignore[misc]
    except Exception as error:
        return error
    raise AssertionError("no error")


async def _select(db: Database, statement: str) -> None:
    async with db.read() as tx:
        await tx.execute(sql(statement))


async def test_a_wrong_statement_is_not_an_outage(db: Database) -> None:
    error = await _error_of(_select(db, "SELECT * FROM no_such_table"))
    assert not connection_problem(error)
    error = await _error_of(_select(db, "SELEC 1"))
    assert not connection_problem(error)


async def test_a_refused_connection_is_an_outage() -> None:
    db = Database(f"postgresql+asyncpg://shop@127.0.0.1:{free_port()}/shop")
    try:
        error = await _error_of(_select(db, "SELECT 1"))
    finally:
        await db.dispose()
    assert isinstance(error, OSError)  # what the probe saw as UNKNOWN "ConnectionRefusedError"
    assert connection_problem(error)


async def test_a_connection_dropped_mid_statement_is_an_outage(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        # SQLite's version: another process keeps the write lock past busy_timeout.
        monkeypatch.setattr(database, "_SQLITE_BUSY_TIMEOUT_MS", 100)
        await db.dispose()
        db = Database(database_url)
        holder = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            async with db.write() as tx:
                error = await _error_of(tx.execute(sql("SELECT 1")))
        except Exception as raised:
            error = raised
        finally:
            holder.rollback()
            holder.close()
            await db.dispose()
        assert "locked" in str(error)
        assert connection_problem(error)
        return

    async def sleeper() -> None:
        async with db.write() as tx:
            await tx.execute(sql("SELECT pg_sleep(30)"))

    task = asyncio.ensure_future(_error_of(sleeper()))
    # The server ends the sleeping session, as a restart or failover would.
    for _ in range(200):
        async with db.read() as tx:
            killed = await tx.fetch(TERMINATE_SLEEPERS)
        if killed:
            break
        await asyncio.sleep(0.02)
    error = await asyncio.wait_for(task, 30)
    assert connection_problem(error)
