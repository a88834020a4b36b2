"""Stock storage. A reservation takes stock for all of its items in one transaction
or for none; each decrement is conditional (``stock >= quantity``), so concurrent
reservations from any number of replicas can never drive stock below zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from shop.inventory.catalog import SEED_CATALOG
from shop.runtime.database import Database, timestamp
from shop.runtime.errors import FailedPrecondition, NotFound, PreconditionViolation

metadata = MetaData()

products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("price_cents", BigInteger, nullable=False),
    Column("stock", Integer, nullable=False),
    # The last line of defence: the database itself refuses an oversell.
    CheckConstraint("stock >= 0", name="stock_not_negative"),
)

RESERVED = "RESERVED"
RELEASED = "RELEASED"

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", String(160), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("created_at", String(40), nullable=False),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column(
        "reservation_id", String(160), ForeignKey("reservations.reservation_id"), primary_key=True
    ),
    Column("sku", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
)


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
        await self._db.create_schema(metadata)
        async with self._db.write() as conn:
            await conn.execute(
                self._db.insert_ignoring_conflicts(products),
                [
                    {
                        "sku": e.sku,
                        "name": e.name,
                        "price_cents": e.price_cents,
                        "stock": seed_stock,
                    }
                    for e in SEED_CATALOG
                ],
            )

    async def list_products(self, after_sku: str | None, limit: int) -> list[ProductRow]:
        query = select(products).order_by(products.c.sku).limit(limit)
        if after_sku is not None:
            query = query.where(products.c.sku > after_sku)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [ProductRow(r.sku, r.name, r.price_cents, r.stock) for r in rows]

    async def reserve(self, reservation_id: str, items: list[Line]) -> Reservation:
        """Takes stock for every item or raises; idempotent by ``reservation_id``."""
        async with self._db.write() as conn:
            created = await conn.execute(
                self._db.insert_ignoring_conflicts(reservations).values(
                    reservation_id=reservation_id, state=RESERVED, created_at=timestamp()
                )
            )
            if created.rowcount == 0:
                return await self._existing(conn, reservation_id)
            lines: list[Line] = []
            short: list[str] = []
            # A fixed lock order (by SKU) keeps concurrent multi-item reservations
            # from deadlocking on PostgreSQL.
            for item in sorted(items, key=lambda line: line.sku):
                price = (
                    await conn.execute(
                        update(products)
                        .where(products.c.sku == item.sku, products.c.stock >= item.quantity)
                        .values(stock=products.c.stock - item.quantity)
                        .returning(products.c.price_cents)
                    )
                ).scalar_one_or_none()
                if price is None:
                    short.append(item.sku)
                else:
                    lines.append(Line(item.sku, item.quantity, price))
            if short:
                # Raising rolls the whole transaction back: no partial reservation.
                raise await self._shortage(conn, short, items)
            reservation = Reservation(reservation_id, tuple(lines))
            await conn.execute(
                reservation_lines.insert(),
                [
                    {"reservation_id": reservation_id, "sku": ln.sku, "quantity": ln.quantity,
                     "unit_price_cents": ln.unit_price_cents}
                    for ln in lines
                ],
            )  # fmt: skip
            return reservation

    async def _existing(self, conn: AsyncConnection, reservation_id: str) -> Reservation:
        state = (
            await conn.execute(
                select(reservations.c.state).where(reservations.c.reservation_id == reservation_id)
            )
        ).scalar_one()
        if state == RELEASED:
            raise FailedPrecondition(
                [PreconditionViolation("RESERVATION", reservation_id, "was already released")]
            )
        rows = (
            await conn.execute(
                select(reservation_lines)
                .where(reservation_lines.c.reservation_id == reservation_id)
                .order_by(reservation_lines.c.sku)
            )
        ).all()
        return Reservation(
            reservation_id, tuple(Line(r.sku, r.quantity, r.unit_price_cents) for r in rows)
        )

    async def _shortage(
        self, conn: AsyncConnection, short: list[str], items: list[Line]
    ) -> FailedPrecondition | NotFound:
        stock = dict(
            (
                await conn.execute(
                    select(products.c.sku, products.c.stock).where(products.c.sku.in_(short))
                )
            ).all()
        )
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
        async with self._db.write() as conn:
            tombstone = await conn.execute(
                self._db.insert_ignoring_conflicts(reservations).values(
                    reservation_id=reservation_id, state=RELEASED, created_at=timestamp()
                )
            )
            if tombstone.rowcount == 1:
                return False
            changed = await conn.execute(
                update(reservations)
                .where(
                    reservations.c.reservation_id == reservation_id,
                    reservations.c.state == RESERVED,
                )
                .values(state=RELEASED)
            )
            if changed.rowcount == 0:
                return False
            rows = (
                await conn.execute(
                    select(reservation_lines.c.sku, reservation_lines.c.quantity)
                    .where(reservation_lines.c.reservation_id == reservation_id)
                    .order_by(reservation_lines.c.sku)
                )
            ).all()
            for sku, quantity in rows:
                await conn.execute(
                    update(products)
                    .where(products.c.sku == sku)
                    .values(stock=products.c.stock + quantity)
                )
            return True

    async def set_stock(self, sku: str, stock: int, name: str, price_cents: int) -> ProductRow:
        async with self._db.write() as conn:
            await conn.execute(
                self._db.insert_ignoring_conflicts(products).values(
                    sku=sku, name=name or sku, price_cents=price_cents, stock=stock
                )
            )
            await conn.execute(update(products).where(products.c.sku == sku).values(stock=stock))
            row = (await conn.execute(select(products).where(products.c.sku == sku))).one()
        return ProductRow(row.sku, row.name, row.price_cents, row.stock)
