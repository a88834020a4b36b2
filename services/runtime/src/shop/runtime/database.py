"""The services' storage: SQLite (the embedded default) and PostgreSQL, through their
drivers (``sqlite3``, ``asyncpg``) with no ORM or query builder between.

Why the drivers themselves: storage was most of a PlaceOrder's CPU. Measured on one
2-core machine, one Reserve transaction (insert, conditional update, insert) took
2.9 ms of CPU through SQLAlchemy's asyncio layer over aiosqlite (every statement a
round trip through aiosqlite's thread and a greenlet switch), 0.75 ms through
SQLAlchemy's synchronous Core, and 0.04 ms through ``sqlite3`` directly.

Statements are written once, in PostgreSQL's syntax (``$1`` parameters, ``= ANY($1)``
for a list), as ``sql(...)`` constants; ``Sql`` holds SQLite's form, derived when the
module is imported. A store runs a transaction as ``async with db.write() as tx`` (or
``db.read()``) and calls ``tx.execute``/``fetch``/``fetchrow`` with positional
parameters; rows come back as tuples in the statement's column order.

SQLite runs on the event loop's thread. A transaction of a few statements costs tens
of microseconds there, far less than handing it to a thread and back (about 130 us
on the same machine, most of it waking the loop). What must not happen on the loop is
*waiting*, so:

* the connections never wait in SQLite's busy handler (``busy_timeout = 0``): a lock
  another replica holds makes ``BEGIN IMMEDIATE`` fail at once, and the transaction
  asks again after an ``asyncio.sleep`` (0.5 ms, doubling to 50 ms), up to
  ``_SQLITE_BUSY_TIMEOUT_MS``, then fails as "database is locked" (an outage);
* a read transaction takes its snapshot the same way before the caller's statements
  run, so no statement inside a transaction meets a lock;
* WAL checkpoints (which fsync) run on a worker thread every ``_CHECKPOINT_EVERY``
  commits, not inside a commit on the loop (``wal_autocheckpoint = 0``).

SQLite is shared by all replicas of a service on one host, so writes lock the
database before they read (``BEGIN IMMEDIATE``), while reads use connections of their
own with ordinary deferred transactions, which WAL lets run beside a writer. Within
one process writers queue on an asyncio lock: the loop runs one write transaction at
a time, and across replicas one writer per process contends for the file lock.
Commits are durable against a process crash (WAL, ``synchronous = NORMAL``).

PostgreSQL runs through an ``asyncpg`` pool with its prepared-statement cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from shop.runtime.config import DatabaseSettings, StartupError
from shop.runtime.failures import recognise_outages

log = logging.getLogger(__name__)
# Every statement sent, at DEBUG (off unless asked for: one level check per statement).
sql_log = logging.getLogger(__name__ + ".sql")

_SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_FIRST_RETRY_S = 0.0005
_SQLITE_LONGEST_RETRY_S = 0.05
_CHECKPOINT_EVERY = 200
# Any constant works; it only has to be the same for every replica.
_SCHEMA_LOCK_KEY = 0x5350_0001
_POSTGRES_POOL_SIZE = 20
# asyncpg waits 60 s for an unanswered connect; fail sooner and retry.
_POSTGRES_CONNECT_TIMEOUT_S = 5.0
_POSTGRES_ACQUIRE_TIMEOUT_S = 30.0

# PostgreSQL refusing work because it is going away or not back yet (SQLSTATE 08*,
# 57P01-57P03, 53300), or the connection gone, as opposed to refusing a statement.
_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
# SQLite's words for a file it cannot use right now: another process holds the write
# lock past the busy timeout, or the volume under SHOP_DATA_DIR is gone or failing.
_SQLITE_OUTAGES = ("database is locked", "unable to open database file", "disk i/o error")
_DRIVER_MODULES = ("asyncpg", "sqlite3")


def connection_problem(error: BaseException) -> bool:
    """True if ``error`` means the database could not be reached or used at all
    (refused, reset, shut down, locked out, timed out connecting), rather than that
    a statement was wrong: the caller may try again later, it is not a bug."""
    for cause in _causes(error):
        if isinstance(cause, _OUTAGES):
            return True
        if isinstance(cause, sqlite3.OperationalError) and str(cause).lower().startswith(
            _SQLITE_OUTAGES
        ):
            return True
        # asyncpg's connect raises plain OSError ("Multiple exceptions: [Errno 111]
        # ...") and TimeoutError (an OSError too: also the pool's, when no connection
        # comes free); only trust them when they came out of the driver.
        if isinstance(cause, OSError) and _raised_in_driver(cause):
            return True
    return False


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions chained to it."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending and len(seen) < 16:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        pending += [current.__context__, current.__cause__]
    return seen


def _raised_in_driver(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


_PARAMETER = re.compile(r"\$(\d+)")
_ANY = re.compile(r"= ANY\(\$(\d+)\)")
_BYTEA = re.compile(r"\bBYTEA\b")


@dataclass(frozen=True)
class Sql:
    """One statement in both dialects. ``lists``: positions (from 0) of parameters
    that are lists, which SQLite receives as a JSON array."""

    postgres: str
    sqlite: str
    lists: frozenset[int]


def sql(statement: str) -> Sql:
    """A statement written for PostgreSQL, with its SQLite form: ``$n`` -> ``?n``,
    ``= ANY($n)`` -> ``IN (SELECT value FROM json_each(?n))``, ``BYTEA`` -> ``BLOB``."""
    text = " ".join(statement.split())
    lists = frozenset(int(n) - 1 for n in _ANY.findall(text))
    lite = _ANY.sub(r"IN (SELECT value FROM json_each($\1))", text)
    lite = _BYTEA.sub("BLOB", _PARAMETER.sub(r"?\1", lite))
    return Sql(text, lite, lists)


Row = Sequence[Any]


def _log_statement(text: str) -> None:
    if sql_log.isEnabledFor(logging.DEBUG):
        sql_log.debug(text)


class Tx(Protocol):
    """A transaction of either database, as the stores use it."""

    async def execute(self, statement: Sql, *args: object) -> int:
        """Runs ``statement``; the number of rows it changed."""
        ...

    async def executemany(self, statement: Sql, rows: Sequence[Sequence[object]]) -> None: ...

    async def fetch(self, statement: Sql, *args: object) -> list[Row]: ...

    async def fetchrow(self, statement: Sql, *args: object) -> Row | None: ...

    async def column_names(self, table: str) -> set[str]:
        """The columns ``table`` has now (for schema upgrades)."""
        ...


class _SqliteTx:
    """Statements run at once on the loop's thread: nothing here waits."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _run(self, statement: Sql, args: Sequence[object]) -> sqlite3.Cursor:
        _log_statement(statement.sqlite)
        if statement.lists:
            args = [
                json.dumps(list(a)) if i in statement.lists else a  # type: ignore[call-overload]
                for i, a in enumerate(args)
            ]
        return self._connection.execute(statement.sqlite, args)

    async def execute(self, statement: Sql, *args: object) -> int:
        return self._run(statement, args).rowcount

    async def executemany(self, statement: Sql, rows: Sequence[Sequence[object]]) -> None:
        _log_statement(statement.sqlite)
        self._connection.executemany(statement.sqlite, rows)

    async def fetch(self, statement: Sql, *args: object) -> list[Row]:
        return self._run(statement, args).fetchall()

    async def fetchrow(self, statement: Sql, *args: object) -> Row | None:
        row: Row | None = self._run(statement, args).fetchone()
        return row

    async def column_names(self, table: str) -> set[str]:
        rows = self._connection.execute(f"PRAGMA table_info({table})").fetchall()
        return {row[1] for row in rows}


class _PostgresTx:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def execute(self, statement: Sql, *args: object) -> int:
        _log_statement(statement.postgres)
        status: str = await self._connection.execute(statement.postgres, *args)
        # A command tag such as "INSERT 0 1" or "UPDATE 3": the count comes last.
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def executemany(self, statement: Sql, rows: Sequence[Sequence[object]]) -> None:
        _log_statement(statement.postgres)
        await self._connection.executemany(statement.postgres, rows)

    async def fetch(self, statement: Sql, *args: object) -> list[Row]:
        _log_statement(statement.postgres)
        rows: list[Row] = await self._connection.fetch(statement.postgres, *args)
        return rows

    async def fetchrow(self, statement: Sql, *args: object) -> Row | None:
        _log_statement(statement.postgres)
        row: Row | None = await self._connection.fetchrow(statement.postgres, *args)
        return row

    async def column_names(self, table: str) -> set[str]:
        rows = await self._connection.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
        return {row[0] for row in rows}


def _enable_wal(connection: sqlite3.Connection) -> None:
    """Switches the database to WAL, waiting out other replicas doing the same.

    Turning a new database file to WAL needs an exclusive lock, and SQLite answers
    "database is locked" at once there instead of waiting on busy_timeout: replicas
    that open a fresh file together would otherwise fail at start-up. Runs on a
    worker thread (``_SqliteFile.open``), so these short sleeps never block the loop.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _SqliteFile:
    """One SQLite file: the loop's write connection, idle read connections, and the
    checkpointer's, which only its worker thread uses."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.write_lock = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._commits = 0
        # Checkpoints done (for tests and diagnostics).
        self.checkpoints = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpointer: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        """A connection in autocommit mode (``begin`` below decides), set up on the
        calling (worker) thread, where waiting for another replica's lock is harmless."""
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(connection)
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            # From here on the connection is used on the loop: it must never wait.
            connection.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            connection.close()
            raise
        return connection

    async def _open(self) -> sqlite3.Connection:
        connection = await asyncio.to_thread(self._connect)
        self._all.append(connection)
        return connection

    async def writer(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = await self._open()
        return self._writer

    async def reader(self) -> sqlite3.Connection:
        return self._readers.pop() if self._readers else await self._open()

    def give_back(self, connection: sqlite3.Connection) -> None:
        self._readers.append(connection)

    @staticmethod
    async def begin(connection: sqlite3.Connection, statement: str, snapshot: bool) -> None:
        """Starts a transaction, waiting (asynchronously) while another process holds
        the lock. ``snapshot``: also take the read snapshot now (a deferred
        transaction takes it at its first read), so the caller's statements cannot
        meet a lock either."""
        delay = _SQLITE_FIRST_RETRY_S
        deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                connection.execute(statement)
                if snapshot:
                    connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return
            except sqlite3.OperationalError as error:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                if not _busy(error) or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _SQLITE_LONGEST_RETRY_S)

    def committed(self) -> None:
        """Counts a commit; every ``_CHECKPOINT_EVERY``, a checkpoint on a worker thread."""
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY == 0 and self._checkpointing is None:
            self._checkpointing = asyncio.ensure_future(asyncio.to_thread(self._checkpoint))
            self._checkpointing.add_done_callback(self._checkpoint_done)

    def _checkpoint(self) -> None:
        if self._checkpointer is None:
            self._checkpointer = self._connect()
            self._all.append(self._checkpointer)
        # PASSIVE: copies what it can without waiting for readers or writers.
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1

    def _checkpoint_done(self, task: asyncio.Task[None]) -> None:
        self._checkpointing = None
        error = None if task.cancelled() else task.exception()
        if error is not None:
            # Not a failed commit: the WAL keeps the data; the next one tries again.
            log.warning("WAL checkpoint failed", extra={"error": str(error)})

    async def close(self) -> None:
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
        for connection in self._all:
            connection.close()
        self._all.clear()
        self._readers.clear()
        self._writer = None
        self._checkpointer = None


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1] or ":memory:"


def _postgres_dsn(url: str) -> str:
    """asyncpg's form of the URL (without a ``+asyncpg`` driver name, which older
    configurations carry)."""
    return "postgresql://" + url.split("://", 1)[1]


class Database:
    """SQLite or PostgreSQL, by URL (``sqlite:///path`` or ``postgresql://...``, the forms
    ``shop.runtime.config.database_url`` gives). Connections open on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._sqlite = _SqliteFile(_sqlite_path(url)) if self.is_sqlite else None
        self._dsn = "" if self.is_sqlite else _postgres_dsn(url)
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()

    async def _postgres_pool(self) -> Any:
        async with self._pool_lock:
            if self._pool is None:
                # min_size 0: connections are made when needed, so a pool can be made
                # while the server is still down.
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=_POSTGRES_POOL_SIZE,
                    timeout=_POSTGRES_CONNECT_TIMEOUT_S,
                    reset=_end_transaction,
                )
            return self._pool

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """A transaction that commits on success and rolls back on any exception."""
        if self._sqlite is None:
            async with self._postgres() as connection, connection.transaction():
                yield _PostgresTx(connection)
            return
        file = self._sqlite
        async with file.write_lock:
            connection = await file.writer()
            await file.begin(connection, "BEGIN IMMEDIATE", snapshot=False)
            try:
                yield _SqliteTx(connection)
                connection.execute("COMMIT")
                file.committed()
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A transaction for reading: one snapshot for all its statements."""
        if self._sqlite is None:
            async with self._postgres() as connection, connection.transaction(readonly=True):
                yield _PostgresTx(connection)
            return
        file = self._sqlite
        connection = await file.reader()
        try:
            await file.begin(connection, "BEGIN", snapshot=True)
            try:
                yield _SqliteTx(connection)
            finally:
                if connection.in_transaction:
                    connection.execute("COMMIT")
        finally:
            file.give_back(connection)

    @asynccontextmanager
    async def _postgres(self) -> AsyncIterator[Any]:
        pool = await self._postgres_pool()
        async with pool.acquire(timeout=_POSTGRES_ACQUIRE_TIMEOUT_S) as connection:
            yield connection

    async def create_schema(self, statements: Sequence[Sql]) -> None:
        """Creates missing tables and indexes (``IF NOT EXISTS`` statements); safe when
        every replica starts at once."""
        async with self.write() as tx:
            if not self.is_sqlite:
                # Concurrent CREATE TABLE on PostgreSQL races on the catalog; serialize it.
                await tx.execute(_SCHEMA_LOCK, _SCHEMA_LOCK_KEY)
            for statement in statements:
                await tx.execute(statement)

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
                async with self.read() as tx:
                    await tx.fetch(_PING)
                return
            # Refused, a name not resolvable yet, "the database system is starting up".
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error) as error:
                reason = (str(error) or type(error).__name__).splitlines()[0]
                if time.monotonic() + delay > deadline:
                    raise StartupError(
                        f"database not reachable after {timeout_s:g} s "
                        f"({attempt} attempts): {reason}"
                    ) from None
                log.warning("waiting for the database", extra={"attempt": attempt, "error": reason})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def dispose(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()
        async with self._pool_lock:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None


async def _end_transaction(connection: Any) -> None:
    """What a connection needs on its way back to the pool: no transaction left open.

    asyncpg's default reset also clears session state (settings, LISTENs, cursors,
    advisory locks), one more round trip and statement per transaction; the stores
    never leave any (their one advisory lock is transaction-scoped)."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


_SCHEMA_LOCK = sql("SELECT pg_advisory_xact_lock($1)")
_PING = sql("SELECT 1")


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
