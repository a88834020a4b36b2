"""Stock storage. A reservation takes stock for all of its items in one transaction
or for none; each decrement is conditional (``stock >= quantity``), so concurrent
reservations from any number of replicas can never drive stock below zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from shop.inventory.catalog import SEED_CATALOG
from shop.runtime.database import Database, Tx, sql, timestamp
from shop.runtime.errors import FailedPrecondition, NotFound, PreconditionViolation

RESERVED = "RESERVED"
RELEASED = "RELEASED"

# The tables as the services have always created them (column types, constraint and
# index names), so databases made by earlier versions need nothing new.
# stock_not_negative is the last line of defence: the database itself refuses an
# oversell.
SCHEMA = (
    sql("""
        CREATE TABLE IF NOT EXISTS products (
            sku VARCHAR(64) NOT NULL,
            name VARCHAR(200) NOT NULL,
            price_cents BIGINT NOT NULL,
            stock INTEGER NOT NULL,
            PRIMARY KEY (sku),
            CONSTRAINT stock_not_negative CHECK (stock >= 0)
        )
    """),
    sql("""
        CREATE TABLE IF NOT EXISTS reservations (
            reservation_id VARCHAR(160) NOT NULL,
            state VARCHAR(16) NOT NULL,
            created_at VARCHAR(40) NOT NULL,
            PRIMARY KEY (reservation_id)
        )
    """),
    sql("""
        CREATE TABLE IF NOT EXISTS reservation_lines (
            reservation_id VARCHAR(160) NOT NULL,
            sku VARCHAR(64) NOT NULL,
            quantity INTEGER NOT NULL,
            unit_price_cents BIGINT NOT NULL,
            PRIMARY KEY (reservation_id, sku),
            FOREIGN KEY (reservation_id) REFERENCES reservations (reservation_id)
        )
    """),
)

SEED_PRODUCT = sql(
    "INSERT INTO products (sku, name, price_cents, stock) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT DO NOTHING"
)
LIST_PRODUCTS = sql("SELECT sku, name, price_cents, stock FROM products ORDER BY sku LIMIT $1")
LIST_PRODUCTS_AFTER = sql(
    "SELECT sku, name, price_cents, stock FROM products WHERE sku > $2 ORDER BY sku LIMIT $1"
)
CREATE_RESERVATION = sql(
    "INSERT INTO reservations (reservation_id, state, created_at) VALUES ($1, $2, $3) "
    "ON CONFLICT DO NOTHING"
)
# Conditional: takes the stock only if there is enough, atomically, on either database.
TAKE_STOCK = sql(
    "UPDATE products SET stock = stock - $2 WHERE sku = $1 AND stock >= $2 RETURNING price_cents"
)
RETURN_STOCK = sql("UPDATE products SET stock = stock + $2 WHERE sku = $1")
ADD_LINE = sql(
    "INSERT INTO reservation_lines (reservation_id, sku, quantity, unit_price_cents) "
    "VALUES ($1, $2, $3, $4)"
)
RESERVATION_STATE = sql("SELECT state FROM reservations WHERE reservation_id = $1")
RESERVATION_LINES = sql(
    "SELECT sku, quantity, unit_price_cents FROM reservation_lines "
    "WHERE reservation_id = $1 ORDER BY sku"
)
STOCK_OF = sql("SELECT sku, stock FROM products WHERE sku = ANY($1)")
MARK_RELEASED = sql("UPDATE reservations SET state = $3 WHERE reservation_id = $1 AND state = $2")
SET_STOCK = sql("UPDATE products SET stock = $2 WHERE sku = $1")
PRODUCT = sql("SELECT sku, name, price_cents, stock FROM products WHERE sku = $1")


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_cents: int = 0


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    lines: tuple[Line, ...]

    @property
    def total_cents(self) -> int:
        return sum(line.quantity * line.unit_price_cents for line in self.lines)


@dataclass(frozen=True)
class ProductRow:
    sku: str
    name: str
    price_cents: int
    stock: int


class InventoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def initialize(self, seed_stock: int) -> None:
        await self._db.create_schema(SCHEMA)
        async with self._db.write() as tx:
            await tx.executemany(
                SEED_PRODUCT, [(e.sku, e.name, e.price_cents, seed_stock) for e in SEED_CATALOG]
            )

    async def list_products(self, after_sku: str | None, limit: int) -> list[ProductRow]:
        async with self._db.read() as tx:
            if after_sku is None:
                rows = await tx.fetch(LIST_PRODUCTS, limit)
            else:
                rows = await tx.fetch(LIST_PRODUCTS_AFTER, limit, after_sku)
        return [ProductRow(*row) for row in rows]

    async def reserve(self, reservation_id: str, items: list[Line]) -> Reservation:
        """Takes stock for every item or raises; idempotent by ``reservation_id``."""
        async with self._db.write() as tx:
            created = await tx.execute(CREATE_RESERVATION, reservation_id, RESERVED, timestamp())
            if created == 0:
                return await self._existing(tx, reservation_id)
            lines: list[Line] = []
            short: list[str] = []
            # A fixed lock order (by SKU) keeps concurrent multi-item reservations
            # from deadlocking on PostgreSQL.
            for item in sorted(items, key=lambda line: line.sku):
                taken = await tx.fetchrow(TAKE_STOCK, item.sku, item.quantity)
                if taken is None:
                    short.append(item.sku)
                else:
                    lines.append(Line(item.sku, item.quantity, taken[0]))
            if short:
                # Raising rolls the whole transaction back: no partial reservation.
                raise await self._shortage(tx, short, items)
            await tx.executemany(
                ADD_LINE,
                [(reservation_id, ln.sku, ln.quantity, ln.unit_price_cents) for ln in lines],
            )
            return Reservation(reservation_id, tuple(lines))

    async def _existing(self, tx: Tx, reservation_id: str) -> Reservation:
        state = await tx.fetchrow(RESERVATION_STATE, reservation_id)
        assert state is not None, "a reservation row exists for an id just refused as taken"
        if state[0] == RELEASED:
            raise FailedPrecondition(
                [PreconditionViolation("RESERVATION", reservation_id, "was already released")]
            )
        rows = await tx.fetch(RESERVATION_LINES, reservation_id)
        return Reservation(reservation_id, tuple(Line(*row) for row in rows))

    async def _shortage(
        self, tx: Tx, short: list[str], items: list[Line]
    ) -> FailedPrecondition | NotFound:
        stock = {sku: count for sku, count in await tx.fetch(STOCK_OF, short)}
        unknown = [sku for sku in short if sku not in stock]
        if unknown:
            return NotFound("product", unknown[0])
        wanted = {item.sku: item.quantity for item in items}
        return FailedPrecondition(
            [
                PreconditionViolation(
                    "STOCK", sku, f"only {stock[sku]} in stock, {wanted[sku]} requested"
                )
                for sku in short
            ]
        )

    async def release(self, reservation_id: str) -> bool:
        """Returns stock; False if already released. Unknown ids leave a tombstone so a
        late duplicate of their Reserve can never take stock afterwards."""
        async with self._db.write() as tx:
            if await tx.execute(CREATE_RESERVATION, reservation_id, RELEASED, timestamp()) == 1:
                return False
            if await tx.execute(MARK_RELEASED, reservation_id, RESERVED, RELEASED) == 0:
                return False
            for sku, quantity, _price in await tx.fetch(RESERVATION_LINES, reservation_id):
                await tx.execute(RETURN_STOCK, sku, quantity)
            return True

    async def set_stock(self, sku: str, stock: int, name: str, price_cents: int) -> ProductRow:
        async with self._db.write() as tx:
            await tx.execute(SEED_PRODUCT, sku, name or sku, price_cents, stock)
            await tx.execute(SET_STOCK, sku, stock)
            row = await tx.fetchrow(PRODUCT, sku)
        assert row is not None, "the product was just written"
        return ProductRow(*row)
