"""SQLAlchemy async engines for SQLite (embedded default) and PostgreSQL.

SQLite is shared by all replicas of a service on one host, so writes must lock the
database before they read: writes run in ``BEGIN IMMEDIATE`` transactions (the
writer waits on ``busy_timeout`` instead of failing a lock upgrade with
SQLITE_BUSY), while reads use a second engine with ordinary deferred transactions
so WAL lets them run beside a writer.

Within one process, SQLite writers also queue on an asyncio lock before asking for
the database lock: SQLite's own busy handler waits by sleeping (in steps up to
100 ms), so letting a process's coroutines all contend for the file lock turns
into long, useless sleeps. Across replicas only one writer per process contends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import MetaData, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from shop.runtime.config import DatabaseSettings, StartupError
from shop.runtime.failures import recognise_outages

log = logging.getLogger(__name__)

_SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant works; it only has to be the same for every replica.
_SCHEMA_LOCK_KEY = 0x5350_0001


# The pool waiting in vain for a connection, and PostgreSQL refusing work because it is
# going away or not back yet (SQLSTATE 08*, 57P01-57P03, 53300), as opposed to
# refusing a statement.
_OUTAGES: tuple[type[BaseException], ...] = (
    PoolTimeout,
    DisconnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
# SQLite's words for a file it cannot use right now: another process holds the write
# lock past busy_timeout, or the volume under SHOP_DATA_DIR is gone or failing.
_SQLITE_OUTAGES = ("database is locked", "unable to open database file", "disk i/o error")
_DRIVER_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")


def connection_problem(error: BaseException) -> bool:
    """True if ``error`` means the database could not be reached or used at all
    (refused, reset, shut down, locked out, timed out connecting), rather than that
    a statement was wrong: the caller may try again later, it is not a bug."""
    for cause in _causes(error):
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, _OUTAGES):
            return True
        if isinstance(cause, sqlite3.OperationalError) and str(cause).lower().startswith(
            _SQLITE_OUTAGES
        ):
            return True
        # asyncpg's connect raises plain OSError ("Multiple exceptions: [Errno 111]
        # ...") and TimeoutError; only trust them when they came out of the driver.
        if isinstance(cause, OSError) and _raised_in_driver(cause):
            return True
    return False


def _causes(error: BaseException) -> list[BaseException]:
    """``error``, what SQLAlchemy wrapped (``orig``) and the chained causes."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending and len(seen) < 16:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        pending += [
            current.__context__,
            current.__cause__,
            orig if isinstance(orig, BaseException) else None,
        ]
    return seen


def _raised_in_driver(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def _enable_wal(cursor: Any) -> None:
    """Switches the database to WAL, waiting out other replicas doing the same.

    Turning a new database file to WAL needs an exclusive lock, and SQLite answers
    "database is locked" at once there instead of waiting on busy_timeout: replicas
    that open a fresh file together would otherwise fail at start-up. Only that
    first switch can contend, so the short blocking sleeps never hit live traffic.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> AsyncEngine:
    # Every use ends its own transaction (engine.begin()), so the pool's rollback on
    # check-in would only add a round trip through aiosqlite's thread per query.
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_reset_on_return=None
    )

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """A write engine and a read engine (the same one on PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            path = url.split(":///", 1)[1]
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._writer = _sqlite_engine(url, immediate=True, pool_size=1)
            self._reader = _sqlite_engine(url, immediate=False, pool_size=4)
        else:
            self._writer = create_async_engine(
                url,
                pool_size=10,
                max_overflow=10,
                pool_pre_ping=True,
                # asyncpg waits 60 s for an unanswered connect; fail sooner and retry.
                connect_args={"timeout": 5},
            )
            self._reader = self._writer

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits on success and rolls back on any exception."""
        if self._write_lock is None:
            async with self._writer.begin() as connection:
                yield connection
            return
        async with self._write_lock, self._writer.begin() as connection:
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._reader.begin() as connection:
            yield connection

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` in the engine's dialect."""
        dialect = sqlite if self.is_sqlite else postgresql
        statement: Insert = dialect.insert(table).on_conflict_do_nothing()
        return statement

    async def create_schema(self, metadata: MetaData) -> None:
        """Creates missing tables; safe when every replica starts at once."""
        async with self.write() as connection:
            if not self.is_sqlite:
                # Concurrent CREATE TABLE on PostgreSQL races on the catalog; serialize it.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                )
            await connection.run_sync(metadata.create_all)

    async def wait_until_reachable(self, timeout_s: float) -> None:
        """Returns once the database answers; raises StartupError after ``timeout_s``.

        In a cluster every pod of a release starts at once, PostgreSQL included:
        waiting here (not yet SERVING, so probes keep traffic away) beats exiting and
        being restarted with a growing back-off.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._writer.connect() as connection:
                    await connection.execute(text("SELECT 1"))
                return
            # Refused, a name not resolvable yet, "the database system is starting up".
            except (OSError, DBAPIError, TimeoutError) as error:
                reason = str(getattr(error, "orig", None) or error).splitlines()[0]
                if time.monotonic() + delay > deadline:
                    raise StartupError(
                        f"database not reachable after {timeout_s:g} s "
                        f"({attempt} attempts): {reason}"
                    ) from None
                log.warning("waiting for the database", extra={"attempt": attempt, "error": reason})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def dispose(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


def timestamp(seconds_ago: float = 0.0) -> str:
    """Now, or ``seconds_ago`` before now, as the stores write times: ISO 8601 in UTC
    to the microsecond, a fixed-width text whose order is time order on SQLite and
    PostgreSQL alike, so a cut-off compares as text."""
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="microseconds")


async def open_database(settings: DatabaseSettings) -> Database:
    """The service's database, once it answers (at most ``settings.wait_s`` later)."""
    database = Database(settings.url)
    try:
        await database.wait_until_reachable(settings.wait_s)
    except BaseException:
        await database.dispose()
        raise
    return database


# A service that uses a database answers UNAVAILABLE, not INTERNAL, while it is down.
recognise_outages(connection_problem)
