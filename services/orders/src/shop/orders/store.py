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

import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    inspect,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from shop.runtime.database import Database, timestamp

PENDING = "PENDING"
CONFIRMED = "CONFIRMED"
CANCELLING = "CANCELLING"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
ROLLING_BACK = "ROLLING_BACK"
FAILED = "FAILED"
VISIBLE_STATES = (PENDING, CONFIRMED, CANCELLING, CANCELLED)

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    # The current attempt's reservation in inventory; replaced when an attempt starts.
    Column("reservation_id", String(64), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    # For REJECTED orders: the inventory's status, replayed to retries of the key.
    Column("failure_code", String(32), nullable=True),
    Column("failure_message", String(1000), nullable=True),
    Column("failure_details", LargeBinary, nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_id", String(36), ForeignKey("orders.order_id"), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
)


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


def _record(row: Row[tuple[object, ...]], items: tuple[Item, ...]) -> OrderRecord:
    m = row._mapping
    return OrderRecord(
        order_id=m["order_id"],
        idempotency_key=m["idempotency_key"],
        request_hash=m["request_hash"],
        customer_id=m["customer_id"],
        status=m["status"],
        attempt=m["attempt"],
        reservation_id=m["reservation_id"],
        total_cents=m["total_cents"],
        items=items,
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        failure_code=m["failure_code"],
        failure_message=m["failure_message"],
        failure_details=m["failure_details"],
    )


class OrderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def initialize(self) -> None:
        await self._db.create_schema(metadata)
        await self._add_reservation_ids()

    async def _add_reservation_ids(self) -> None:
        """Databases made before reservation ids were random lack the column: add it,
        filled with the ids those orders' reservations were made under (order id and
        attempt), so confirmed orders can still be cancelled and pending ones finished.

        Replicas start together: SQLite's write transaction is exclusive, and
        PostgreSQL's ``IF NOT EXISTS`` makes a second replica's ALTER a no-op."""
        async with self._db.write() as conn:
            columns = await conn.run_sync(
                lambda sync: {column["name"] for column in inspect(sync).get_columns("orders")}
            )
            if "reservation_id" in columns:
                return
            if_not_exists = "" if self._db.is_sqlite else "IF NOT EXISTS "
            await conn.execute(
                text(f"ALTER TABLE orders ADD COLUMN {if_not_exists}reservation_id VARCHAR(64)")
            )
            await conn.execute(
                text(
                    "UPDATE orders SET reservation_id = order_id || ':' || CAST(attempt AS "
                    "VARCHAR(12)) WHERE reservation_id IS NULL"
                )
            )

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
        async with self._db.write() as conn:
            created = await conn.execute(
                self._db.insert_ignoring_conflicts(orders).values(
                    order_id=new.order_id,
                    idempotency_key=key,
                    request_hash=new.request_hash,
                    customer_id=customer_id,
                    status=PENDING,
                    attempt=1,
                    reservation_id=new.reservation_id,
                    total_cents=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            if created.rowcount == 1:
                await conn.execute(
                    order_items.insert(),
                    [
                        {"order_id": new.order_id, "sku": i.sku, "quantity": i.quantity}
                        for i in new.items
                    ],
                )
                # The common case needs no read-back: the row is exactly what we wrote.
                return new
        found = await self.get_by_key(key)
        assert found is not None, "an order row exists for a key just inserted"
        return found

    async def get_by_key(self, key: str) -> OrderRecord | None:
        return await self._get(orders.c.idempotency_key == key)

    async def get(self, order_id: str) -> OrderRecord | None:
        return await self._get(orders.c.order_id == order_id)

    async def _get(self, condition: object) -> OrderRecord | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(orders).where(condition))).first()  # type: ignore[arg-type]
            if row is None:
                return None
            items = await self._items_of(conn, [row.order_id])
        return _record(row, items.get(row.order_id, ()))

    async def transition(
        self, order: OrderRecord, to_status: str, from_statuses: tuple[str, ...], **values: object
    ) -> OrderRecord | None:
        """Moves ``order`` to ``to_status`` if it is still in one of ``from_statuses`` at
        the same attempt; returns the updated record, or None if something else won."""
        now = timestamp()
        async with self._db.write() as conn:
            changed = await conn.execute(
                update(orders)
                .where(
                    orders.c.order_id == order.order_id,
                    orders.c.attempt == order.attempt,
                    orders.c.status.in_(from_statuses),
                )
                .values(status=to_status, updated_at=now, **values)
            )
        if changed.rowcount == 0:
            return None
        fields = {k: v for k, v in values.items() if k in OrderRecord.__dataclass_fields__}
        return replace(order, status=to_status, updated_at=now, **fields)  # type: ignore[arg-type]

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
        query = (
            select(orders)
            .where(orders.c.customer_id == customer_id, orders.c.status.in_(VISIBLE_STATES))
            .order_by(orders.c.created_at.desc(), orders.c.order_id.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(orders.c.created_at, orders.c.order_id) < tuple_(*after))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
            items = await self._items_of(conn, [row.order_id for row in rows])
        return [_record(row, items.get(row.order_id, ())) for row in rows]

    @staticmethod
    async def _items_of(conn: AsyncConnection, order_ids: list[str]) -> dict[str, tuple[Item, ...]]:
        """Items of many orders in one query (instead of one query per order)."""
        found: dict[str, list[Item]] = {}
        if order_ids:
            rows = await conn.execute(
                select(order_items.c.order_id, order_items.c.sku, order_items.c.quantity)
                .where(order_items.c.order_id.in_(order_ids))
                .order_by(order_items.c.order_id, order_items.c.sku)
            )
            for order_id, sku, quantity in rows:
                found.setdefault(order_id, []).append(Item(sku, quantity))
        return {order_id: tuple(found_items) for order_id, found_items in found.items()}

    async def stale(self, statuses: tuple[str, ...], older_than_s: float) -> list[OrderRecord]:
        cutoff = timestamp(older_than_s)
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(orders)
                    .where(orders.c.status.in_(statuses), orders.c.updated_at < cutoff)
                    .limit(100)
                )
            ).all()
            items = await self._items_of(conn, [row.order_id for row in rows])
        return [_record(row, items.get(row.order_id, ())) for row in rows]

    async def changed_orders(
        self, known: dict[str, tuple[str, int, str] | None], batch: int = 500
    ) -> list[OrderRecord]:
        """The orders of ``known`` whose (status, attempt, updated_at) is no longer the
        one given (None: returned whatever it is), with their items: one WatchOrder
        poll for every watched order of a replica at once.

        Per ``batch`` ids (so IN lists stay within every driver's parameter limit), one
        query reads just those stamps; full rows and items are read only for orders
        that changed. All in one transaction, so every record is of the same moment."""
        ids = list(known)
        found: list[OrderRecord] = []
        async with self._db.read() as conn:
            for start in range(0, len(ids), batch):
                c = orders.c
                stamps = await conn.execute(
                    select(c.order_id, c.status, c.attempt, c.updated_at).where(
                        c.order_id.in_(ids[start : start + batch])
                    )
                )
                changed = [
                    order_id
                    for order_id, status, attempt, updated_at in stamps
                    if known[order_id] != (status, attempt, updated_at)
                ]
                if not changed:
                    continue
                rows = await conn.execute(select(orders).where(orders.c.order_id.in_(changed)))
                items = await self._items_of(conn, changed)
                found += [_record(row, items.get(row.order_id, ())) for row in rows]
        return found
