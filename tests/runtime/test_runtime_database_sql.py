"""The storage layer under the stores (``shop.runtime.database``): one statement text
for both databases, transactions that commit or roll back whole, and SQLite that never
waits on the event loop's thread."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shop.runtime import database
from shop.runtime.database import Database, sql

CREATE = sql(
    "CREATE TABLE IF NOT EXISTS things (name VARCHAR(20) NOT NULL, size BIGINT NOT NULL, "
    "blob BYTEA, PRIMARY KEY (name))"
)
ADD = sql("INSERT INTO things (name, size) VALUES ($1, $2) ON CONFLICT DO NOTHING")
GROW = sql("UPDATE things SET size = size + $2 WHERE name = $1 AND size + $2 <= 10 RETURNING size")
NAMED = sql("SELECT name, size FROM things WHERE name = ANY($1) ORDER BY name")
ALL = sql("SELECT name, size FROM things ORDER BY name")


def test_one_text_gives_each_dialect_its_form() -> None:
    statement = sql("""
        SELECT a FROM t
        WHERE x = ANY($1) AND y = $2 AND z >= $2
    """)
    assert statement.postgres == "SELECT a FROM t WHERE x = ANY($1) AND y = $2 AND z >= $2"
    assert statement.sqlite == (
        "SELECT a FROM t WHERE x IN (SELECT value FROM json_each(?1)) AND y = ?2 AND z >= ?2"
    )
    assert statement.lists == {0}
    assert sql("CREATE TABLE b (d BYTEA)").sqlite == "CREATE TABLE b (d BLOB)"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    opened = Database(database_url)
    await opened.create_schema([CREATE])
    try:
        yield opened
    finally:
        await opened.dispose()


async def test_statements_mean_the_same_on_both_databases(db: Database) -> None:
    async with db.write() as tx:
        assert await tx.execute(ADD, "a", 1) == 1
        assert await tx.execute(ADD, "a", 5) == 0  # the conflict is ignored, not raised
        await tx.executemany(ADD, [("b", 2), ("c", 3)])
        assert await tx.fetchrow(GROW, "a", 4) == (5,)
        assert await tx.fetchrow(GROW, "a", 6) is None  # the condition held it back
    async with db.read() as tx:
        assert [tuple(r) for r in await tx.fetch(NAMED, ["a", "c", "zz"])] == [("a", 5), ("c", 3)]
        assert await tx.fetch(NAMED, []) == []
        assert await tx.column_names("things") == {"name", "size", "blob"}


async def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as tx:
            await tx.execute(ADD, "half", 1)
            raise RuntimeError("after the first statement")
    # A statement the database refuses rolls back the ones before it too.
    with pytest.raises(Exception, match=r"(?i)unique|constraint|duplicate"):
        async with db.write() as tx:
            await tx.execute(ADD, "other", 1)
            await tx.execute(sql("INSERT INTO things (name, size) VALUES ($1, $2)"), "other", 2)
    async with db.read() as tx:
        assert await tx.fetch(ALL) == []


async def test_sqlite_waits_for_another_process_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    db = Database(f"sqlite:///{path}")
    await db.create_schema([CREATE])
    holding = threading.Event()
    release = threading.Event()

    def other_replica() -> None:
        # Another process's writer: holds the write lock until told to let go.
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO things (name, size) VALUES ('theirs', 1)")
        holding.set()
        release.wait(30)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=other_replica)
    holder.start()
    try:
        assert await asyncio.to_thread(holding.wait, 30)

        async def write() -> None:
            async with db.write() as tx:
                await tx.execute(ADD, "ours", 2)

        writing = asyncio.ensure_future(write())
        # The loop keeps serving while the write waits for the lock: ticks go on.
        ticks = 0
        deadline = time.monotonic() + 30
        while ticks < 20:
            await asyncio.sleep(0.005)
            ticks += 1
            assert time.monotonic() < deadline
        assert not writing.done()
        release.set()
        await asyncio.wait_for(writing, 30)
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 30)
    async with db.read() as tx:
        assert [tuple(r) for r in await tx.fetch(ALL)] == [("ours", 2), ("theirs", 1)]
    await db.dispose()


async def test_sqlite_checkpoints_off_the_loop_every_few_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "_CHECKPOINT_EVERY", 3)
    db = Database(f"sqlite:///{tmp_path}/wal.db")
    await db.create_schema([CREATE])  # the first commit
    for n in range(2):
        async with db.write() as tx:
            await tx.execute(ADD, f"t{n}", n)
    file = db._sqlite
    assert file is not None
    deadline = time.monotonic() + 30
    while file.checkpoints < 1:
        assert time.monotonic() < deadline, "no checkpoint after 3 commits"
        await asyncio.sleep(0.01)
    # The rows are in the database file itself now, not only in its WAL: a copy of
    # the file alone has them.
    shutil.copy(tmp_path / "wal.db", tmp_path / "alone.db")
    alone = sqlite3.connect(tmp_path / "alone.db")
    assert alone.execute("SELECT count(*) FROM things").fetchone() == (2,)
    alone.close()
    await db.dispose()
