"""An orders database made before reservation ids were random keeps working.

Such a database has no ``reservation_id`` column; its orders' reservations were made
under ``<order id>:<attempt>``. Starting the new code on it adds the column and fills
it with exactly those ids, so a confirmed order can still be cancelled (its Release
names the reservation inventory holds). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

from shop.orders.store import CONFIRMED, Item, OrderStore
from shop.runtime.database import Database, sql

# The tables as the service created them before reservation ids (then through
# SQLAlchemy, whose DDL this is).
OLD_SCHEMA = (
    sql("""
        CREATE TABLE orders (
            order_id VARCHAR(36) NOT NULL,
            idempotency_key VARCHAR(128) NOT NULL,
            request_hash VARCHAR(64) NOT NULL,
            customer_id VARCHAR(64) NOT NULL,
            status VARCHAR(16) NOT NULL,
            attempt INTEGER NOT NULL,
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
    sql("CREATE INDEX ix_orders_customer_id ON orders (customer_id)"),
    sql("CREATE INDEX ix_orders_status ON orders (status)"),
    sql("""
        CREATE TABLE order_items (
            order_id VARCHAR(36) NOT NULL,
            sku VARCHAR(64) NOT NULL,
            quantity INTEGER NOT NULL,
            PRIMARY KEY (order_id, sku),
            FOREIGN KEY(order_id) REFERENCES orders (order_id)
        )
    """),
)
OLD_ORDER = sql(
    "INSERT INTO orders (order_id, idempotency_key, request_hash, customer_id, "
    "status, attempt, total_cents, created_at, updated_at) VALUES "
    "('0b7c6a52-6c43-4a55-9b8e-5f1f3f0d6a11', 'k-old', 'h', 'cust-1', 'CONFIRMED', "
    "2, 500, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
)
RESERVATION_IDS = sql("SELECT reservation_id FROM orders")


async def test_an_old_database_gets_the_reservation_ids_its_orders_were_made_under(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        await db.create_schema(OLD_SCHEMA)
        async with db.write() as tx:
            await tx.execute(OLD_ORDER)
        # Every replica starts at once on the same database.
        stores = [OrderStore(db), OrderStore(db)]
        await asyncio.gather(*(store.initialize() for store in stores))
        record = await stores[0].get_by_key("k-old")
        assert record is not None and record.status == CONFIRMED
        assert record.reservation_id == "0b7c6a52-6c43-4a55-9b8e-5f1f3f0d6a11:2"
        # New orders get random ids in the same column.
        new = await stores[1].create_or_get("k-new", "cust-1", [Item("SKU-1", 1)])
        assert len(new.reservation_id) == 32 and ":" not in new.reservation_id
        async with db.read() as tx:
            ids = [row[0] for row in await tx.fetch(RESERVATION_IDS)]
        assert sorted(ids, key=len) == [new.reservation_id, record.reservation_id]
    finally:
        await db.dispose()
