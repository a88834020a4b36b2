"""An orders database made before reservation ids were random keeps working.

Such a database has no ``reservation_id`` column; its orders' reservations were made
under ``<order id>:<attempt>``. Starting the new code on it adds the column and fills
it with exactly those ids, so a confirmed order can still be cancelled (its Release
names the reservation inventory holds). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Column, MetaData, Table, select

from shop.orders.store import CONFIRMED, Item, OrderStore, order_items, orders
from shop.runtime.database import Database


def _old_schema() -> MetaData:
    old = MetaData()
    Table(
        "orders",
        old,
        *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
          for c in orders.columns if c.name != "reservation_id"],
    )  # fmt: skip
    order_items.to_metadata(old)
    return old


async def test_an_old_database_gets_the_reservation_ids_its_orders_were_made_under(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        await db.create_schema(_old_schema())
        async with db.write() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO orders (order_id, idempotency_key, request_hash, customer_id, "
                "status, attempt, total_cents, created_at, updated_at) VALUES "
                "('0b7c6a52-6c43-4a55-9b8e-5f1f3f0d6a11', 'k-old', 'h', 'cust-1', 'CONFIRMED', "
                "2, 500, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
            )
        # Every replica starts at once on the same database.
        stores = [OrderStore(db), OrderStore(db)]
        await asyncio.gather(*(store.initialize() for store in stores))
        record = await stores[0].get_by_key("k-old")
        assert record is not None and record.status == CONFIRMED
        assert record.reservation_id == "0b7c6a52-6c43-4a55-9b8e-5f1f3f0d6a11:2"
        # New orders get random ids in the same column.
        new = await stores[1].create_or_get("k-new", "cust-1", [Item("SKU-1", 1)])
        assert len(new.reservation_id) == 32 and ":" not in new.reservation_id
        async with db.read() as conn:
            ids = (await conn.execute(select(orders.c.reservation_id))).scalars().all()
        assert sorted(ids, key=len) == [new.reservation_id, record.reservation_id]
    finally:
        await db.dispose()
