"""Order storage. The idempotency key is unique in the table, so two concurrent
requests with the same key (from any replica) end up with one order row.

Internal states beyond the public enum: REJECTED (inventory said no; nothing was
reserved), ROLLING_BACK (an attempt has been claimed for release: it can never be
confirmed any more, and its reservation is being returned) and FAILED (that release
is done). None of them is visible to clients as an order.

Each attempt of an order has its own reservation id, random and stored here: it is
the only handle on the attempt's stock in inventory, so it must not be derivable
from anything a client sees (an order id, an idempotency key).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace

from shop.runtime.database import Database, Row, Sql, Tx, sql, timestamp

PENDING = "PENDING"
CONFIRMED = "CONFIRMED"
CANCELLING = "CANCELLING"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
ROLLING_BACK = "ROLLING_BACK"
FAILED = "FAILED"
VISIBLE_STATES = (PENDING, CONFIRMED, CANCELLING, CANCELLED)

# The tables as the service has always created them (column types, constraint and
# index names), so databases made by earlier versions need nothing new but the
# reservation_id column (``OrderStore._add_reservation_ids``). In ``orders``,
# reservation_id is the current attempt's reservation in inventory, replaced when an
# attempt starts; failure_* hold, for REJECTED orders, the inventory's status,
# replayed to retries of the key.
SCHEMA = (
    sql("""
        CREATE TABLE IF NOT EXISTS orders (
            order_id VARCHAR(36) NOT NULL,
            idempotency_key VARCHAR(128) NOT NULL,
            request_hash VARCHAR(64) NOT NULL,
            customer_id VARCHAR(64) NOT NULL,
            status VARCHAR(16) NOT NULL,
            attempt INTEGER NOT NULL,
            reservation_id VARCHAR(64) NOT NULL,
            total_cents BIGINT NOT NULL,
            failure_code VARCHAR(32),
            failure_message VARCHAR(1000),
            failure_details BYTEA,
            created_at VARCHAR(40) NOT NULL,
            updated_at VARCHAR(40) NOT NULL,
            PRIMARY KEY (order_id),
            UNIQUE (idempotency_key)
        )
    """),
    sql("CREATE INDEX IF NOT EXISTS ix_orders_customer_id ON orders (customer_id)"),
    sql("CREATE INDEX IF NOT EXISTS ix_orders_status ON orders (status)"),
    sql("""
        CREATE TABLE IF NOT EXISTS order_items (
            order_id VARCHAR(36) NOT NULL,
            sku VARCHAR(64) NOT NULL,
            quantity INTEGER NOT NULL,
            PRIMARY KEY (order_id, sku),
            FOREIGN KEY (order_id) REFERENCES orders (order_id)
        )
    """),
)

# The columns of an OrderRecord but its items, in the record's order.
_COLUMNS = (
    "order_id, idempotency_key, request_hash, customer_id, status, attempt, reservation_id, "
    "total_cents, created_at, updated_at, failure_code, failure_message, failure_details"
)
CREATE_ORDER = sql(
    "INSERT INTO orders (order_id, idempotency_key, request_hash, customer_id, status, "
    "attempt, reservation_id, total_cents, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
)
ADD_ITEM = sql("INSERT INTO order_items (order_id, sku, quantity) VALUES ($1, $2, $3)")
ORDER_BY_KEY = sql(f"SELECT {_COLUMNS} FROM orders WHERE idempotency_key = $1")
ORDER_BY_ID = sql(f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1")
ORDERS_BY_ID = sql(f"SELECT {_COLUMNS} FROM orders WHERE order_id = ANY($1)")
ITEMS_OF = sql(
    "SELECT order_id, sku, quantity FROM order_items WHERE order_id = ANY($1) "
    "ORDER BY order_id, sku"
)
CUSTOMER_ORDERS = sql(
    f"SELECT {_COLUMNS} FROM orders WHERE customer_id = $1 AND status = ANY($2) "
    "ORDER BY created_at DESC, order_id DESC LIMIT $3"
)
# Keyset pagination: the rows before the previous page's last (created_at, order_id).
CUSTOMER_ORDERS_AFTER = sql(
    f"SELECT {_COLUMNS} FROM orders WHERE customer_id = $1 AND status = ANY($2) "
    "AND (created_at < $4 OR (created_at = $4 AND order_id < $5)) "
    "ORDER BY created_at DESC, order_id DESC LIMIT $3"
)
STALE_ORDERS = sql(
    f"SELECT {_COLUMNS} FROM orders WHERE status = ANY($1) AND updated_at < $2 LIMIT 100"
)
ORDER_STAMPS = sql(
    "SELECT order_id, status, attempt, updated_at FROM orders WHERE order_id = ANY($1)"
)
# PostgreSQL's IF NOT EXISTS makes a second replica's ALTER a no-op; SQLite has no
# such clause, and its exclusive write transaction keeps a second one from getting here.
ADD_RESERVATION_ID_SQLITE = sql("ALTER TABLE orders ADD COLUMN reservation_id VARCHAR(64)")
ADD_RESERVATION_ID_POSTGRES = sql(
    "ALTER TABLE orders ADD COLUMN IF NOT EXISTS reservation_id VARCHAR(64)"
)
FILL_RESERVATION_IDS = sql(
    "UPDATE orders SET reservation_id = order_id || ':' || CAST(attempt AS VARCHAR(12)) "
    "WHERE reservation_id IS NULL"
)
# The compare-and-set every state change is (``OrderStore.transition``): $1 order,
# $2 attempt, $3 the states it may leave, then the new values.
_TRANSITION = (
    "UPDATE orders SET status = $4, updated_at = $5{more} "
    "WHERE order_id = $1 AND attempt = $2 AND status = ANY($3)"
)
# Only these columns change in a transition besides status and updated_at.
TRANSITION_COLUMNS = frozenset(
    {"attempt", "reservation_id", "total_cents", "failure_code", "failure_message",
     "failure_details"}
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    sku: str
    quantity: int


@dataclass(frozen=True)
class OrderRecord:
    order_id: str
    idempotency_key: str
    request_hash: str
    customer_id: str
    status: str
    attempt: int
    # One reservation per attempt: a released (FAILED) attempt's id is spent.
    reservation_id: str
    total_cents: int
    items: tuple[Item, ...]
    created_at: str
    updated_at: str
    failure_code: str | None = None
    failure_message: str | None = None
    failure_details: bytes | None = None


def new_reservation_id() -> str:
    """A fresh, unguessable reservation id (128 random bits as 32 hex digits).

    Release takes nothing but this id, so whoever knows it can return the stock of a
    confirmed order: it must not be built from the order id or anything else public.
    Hex digits fit inventory's identifier rules (letters, digits, no leading symbol)."""
    return secrets.token_hex(16)


def request_hash(customer_id: str, items: list[Item]) -> str:
    """Fingerprint of what was ordered, to catch a key reused for another order."""
    canonical = customer_id + "\n" + "\n".join(f"{i.sku}:{i.quantity}" for i in sorted(
        items, key=lambda i: i.sku))  # fmt: skip
    return hashlib.sha256(canonical.encode()).hexdigest()


def _record(row: Row, items: tuple[Item, ...]) -> OrderRecord:
    """An order from a row of ``_COLUMNS``."""
    (order_id, key, fingerprint, customer_id, status, attempt, reservation_id, total_cents,
     created_at, updated_at, failure_code, failure_message, failure_details) = row  # fmt: skip
    return OrderRecord(
        order_id=order_id,
        idempotency_key=key,
        request_hash=fingerprint,
        customer_id=customer_id,
        status=status,
        attempt=attempt,
        reservation_id=reservation_id,
        total_cents=total_cents,
        items=items,
        created_at=created_at,
        updated_at=updated_at,
        failure_code=failure_code,
        failure_message=failure_message,
        failure_details=None if failure_details is None else bytes(failure_details),
    )


@functools.cache
def _transition_sql(columns: tuple[str, ...]) -> Sql:
    """The compare-and-set that also sets ``columns`` (from $6 on); one per set of
    columns, made once."""
    unknown = set(columns) - TRANSITION_COLUMNS
    assert not unknown, f"not a column a transition sets: {sorted(unknown)}"
    more = "".join(f", {column} = ${i}" for i, column in enumerate(columns, start=6))
    return sql(_TRANSITION.format(more=more))


class OrderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def initialize(self) -> None:
        await self._db.create_schema(SCHEMA)
        await self._add_reservation_ids()

    async def _add_reservation_ids(self) -> None:
        """Databases made before reservation ids were random lack the column: add it,
        filled with the ids those orders' reservations were made under (order id and
        attempt), so confirmed orders can still be cancelled and pending ones finished.

        Replicas start together: SQLite's write transaction is exclusive, and
        PostgreSQL's ``IF NOT EXISTS`` makes a second replica's ALTER a no-op."""
        async with self._db.write() as tx:
            if "reservation_id" in await tx.column_names("orders"):
                return
            sqlite = self._db.is_sqlite
            await tx.execute(ADD_RESERVATION_ID_SQLITE if sqlite else ADD_RESERVATION_ID_POSTGRES)
            await tx.execute(FILL_RESERVATION_IDS)

    async def create_or_get(self, key: str, customer_id: str, items: list[Item]) -> OrderRecord:
        """The order for ``key``: a new PENDING one, or whatever the key already has."""
        now = timestamp()
        new = OrderRecord(
            order_id=str(uuid.uuid4()),
            idempotency_key=key,
            request_hash=request_hash(customer_id, items),
            customer_id=customer_id,
            status=PENDING,
            attempt=1,
            reservation_id=new_reservation_id(),
            total_cents=0,
            items=tuple(sorted(items, key=lambda i: i.sku)),
            created_at=now,
            updated_at=now,
        )
        async with self._db.write() as tx:
            created = await tx.execute(
                CREATE_ORDER, new.order_id, key, new.request_hash, customer_id, PENDING, 1,
                new.reservation_id, 0, now, now,
            )  # fmt: skip
            if created == 1:
                await tx.executemany(
                    ADD_ITEM, [(new.order_id, i.sku, i.quantity) for i in new.items]
                )
                # The common case needs no read-back: the row is exactly what we wrote.
                return new
        found = await self.get_by_key(key)
        assert found is not None, "an order row exists for a key just inserted"
        return found

    async def get_by_key(self, key: str) -> OrderRecord | None:
        return await self._get(ORDER_BY_KEY, key)

    async def get(self, order_id: str) -> OrderRecord | None:
        return await self._get(ORDER_BY_ID, order_id)

    async def _get(self, statement: Sql, value: str) -> OrderRecord | None:
        async with self._db.read() as tx:
            row = await tx.fetchrow(statement, value)
            if row is None:
                return None
            items = await self._items_of(tx, [row[0]])
        return _record(row, items.get(row[0], ()))

    async def transition(
        self, order: OrderRecord, to_status: str, from_statuses: tuple[str, ...], **values: object
    ) -> OrderRecord | None:
        """Moves ``order`` to ``to_status`` if it is still in one of ``from_statuses`` at
        the same attempt; returns the updated record, or None if something else won."""
        now = timestamp()
        columns = tuple(values)
        async with self._db.write() as tx:
            changed = await tx.execute(
                _transition_sql(columns), order.order_id, order.attempt, list(from_statuses),
                to_status, now, *values.values(),
            )  # fmt: skip
        if changed == 0:
            return None
        return replace(order, status=to_status, updated_at=now, **values)  # type: ignore[arg-type]

    async def next_attempt(self, order: OrderRecord) -> OrderRecord | None:
        """FAILED(N) -> PENDING(N + 1) with a fresh reservation id, or None if something
        else moved the order first. The new id is written by the same compare-and-set
        that starts the attempt, so every attempt's reservation is its own."""
        return await self.transition(
            order,
            PENDING,
            (FAILED,),
            attempt=order.attempt + 1,
            reservation_id=new_reservation_id(),
        )

    async def list_for_customer(
        self, customer_id: str, after: tuple[str, str] | None, limit: int
    ) -> list[OrderRecord]:
        """Newest first; ``after`` is the (created_at, order_id) of the previous page's end."""
        visible = list(VISIBLE_STATES)
        async with self._db.read() as tx:
            if after is None:
                rows = await tx.fetch(CUSTOMER_ORDERS, customer_id, visible, limit)
            else:
                rows = await tx.fetch(CUSTOMER_ORDERS_AFTER, customer_id, visible, limit, *after)
            items = await self._items_of(tx, [row[0] for row in rows])
        return [_record(row, items.get(row[0], ())) for row in rows]

    @staticmethod
    async def _items_of(tx: Tx, order_ids: list[str]) -> dict[str, tuple[Item, ...]]:
        """Items of many orders in one query (instead of one query per order)."""
        found: dict[str, list[Item]] = {}
        if order_ids:
            for order_id, sku, quantity in await tx.fetch(ITEMS_OF, order_ids):
                found.setdefault(order_id, []).append(Item(sku, quantity))
        return {order_id: tuple(found_items) for order_id, found_items in found.items()}

    async def stale(self, statuses: tuple[str, ...], older_than_s: float) -> list[OrderRecord]:
        cutoff = timestamp(older_than_s)
        async with self._db.read() as tx:
            rows = await tx.fetch(STALE_ORDERS, list(statuses), cutoff)
            items = await self._items_of(tx, [row[0] for row in rows])
        return [_record(row, items.get(row[0], ())) for row in rows]

    async def changed_orders(
        self, known: dict[str, tuple[str, int, str] | None], batch: int = 500
    ) -> list[OrderRecord]:
        """The orders of ``known`` whose (status, attempt, updated_at) is no longer the
        one given (None: returned whatever it is), with their items: one WatchOrder
        poll for every watched order of a replica at once.

        Per ``batch`` ids (to keep each statement's list small), one query reads just
        those stamps; full rows and items are read only for orders that changed. All in
        one transaction, so every record is of the same moment."""
        ids = list(known)
        found: list[OrderRecord] = []
        async with self._db.read() as tx:
            for start in range(0, len(ids), batch):
                stamps = await tx.fetch(ORDER_STAMPS, ids[start : start + batch])
                changed = [
                    order_id
                    for order_id, status, attempt, updated_at in stamps
                    if known[order_id] != (status, attempt, updated_at)
                ]
                if not changed:
                    continue
                rows = await tx.fetch(ORDERS_BY_ID, changed)
                items = await self._items_of(tx, changed)
                found += [_record(row, items.get(row[0], ())) for row in rows]
        return found
