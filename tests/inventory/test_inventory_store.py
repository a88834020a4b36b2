"""InventoryStore against a fresh SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc
import pytest

from shop.inventory.catalog import SEED_CATALOG
from shop.inventory.store import (
    InventoryStore,
    Line,
    Reservation,
)
from shop.runtime.database import sql
from shop.runtime.errors import FailedPrecondition, NotFound

OpenStore = Callable[[], Awaitable[InventoryStore]]
COUNT_HEADS = sql("SELECT count(*) FROM reservations WHERE reservation_id = $1")
COUNT_LINES = sql("SELECT count(*) FROM reservation_lines WHERE reservation_id = $1")


async def stock_of(store: InventoryStore, sku: str) -> int:
    rows = await store.list_products(None, 1000)
    return next(row.stock for row in rows if row.sku == sku)


async def reservation_rows(store: InventoryStore, reservation_id: str) -> tuple[int, int]:
    """(reservation rows, reservation line rows) stored under ``reservation_id``."""
    async with store._db.read() as tx:
        heads = await tx.fetchrow(COUNT_HEADS, reservation_id)
        lines = await tx.fetchrow(COUNT_LINES, reservation_id)
    assert heads is not None and lines is not None
    return int(heads[0]), int(lines[0])


async def test_seeded_catalog_and_set_stock(store: InventoryStore) -> None:
    rows = await store.list_products(None, 1000)
    assert [r.sku for r in rows] == sorted(e.sku for e in SEED_CATALOG)
    assert {r.stock for r in rows} == {100}
    assert {r.sku: r.price_cents for r in rows} == {e.sku: e.price_cents for e in SEED_CATALOG}

    created = await store.set_stock("ZZZ-NEW", 7, "New thing", 1234)
    assert (created.sku, created.name, created.price_cents, created.stock) == (
        "ZZZ-NEW", "New thing", 1234, 7,
    )  # fmt: skip
    # An existing product keeps its name and price; only the stock changes.
    updated = await store.set_stock("ZZZ-NEW", 0, "Other name", 1)
    assert (updated.name, updated.price_cents, updated.stock) == ("New thing", 1234, 0)
    assert await stock_of(store, "ZZZ-NEW") == 0
    # Initializing again (a replica restarting) never overwrites existing stock.
    await store.initialize(5)
    assert await stock_of(store, "ESP-001") == 100


async def test_list_products_pages_through_everything_in_order(store: InventoryStore) -> None:
    seen: list[str] = []
    after: str | None = None
    for _ in range(20):
        page = await store.list_products(after, 5)
        assert len(page) <= 5
        if not page:
            break
        seen += [row.sku for row in page]
        after = page[-1].sku
    assert seen == sorted(e.sku for e in SEED_CATALOG)
    assert await store.list_products(seen[-1], 5) == []


async def test_reserve_takes_stock_and_prices_lines(store: InventoryStore) -> None:
    reservation = await store.reserve("r-1", [Line("MUG-003", 2), Line("ESP-001", 3)])
    assert reservation.lines == (Line("ESP-001", 3, 2490), Line("MUG-003", 2, 1450))
    assert reservation.total_cents == 3 * 2490 + 2 * 1450
    assert await stock_of(store, "ESP-001") == 97
    assert await stock_of(store, "MUG-003") == 98
    assert await reservation_rows(store, "r-1") == (1, 2)


async def test_reserve_is_all_or_nothing(store: InventoryStore) -> None:
    await store.set_stock("FLT-002", 1, "", 0)
    with pytest.raises(FailedPrecondition) as caught:
        await store.reserve("r-short", [Line("ESP-001", 5), Line("FLT-002", 2), Line("MUG-003", 1)])
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert [v.subject for v in caught.value.violations] == ["FLT-002"]
    assert "only 1 in stock, 2 requested" in caught.value.violations[0].description
    # Nothing was taken, not even for the items that had enough, and no row remains.
    assert await stock_of(store, "ESP-001") == 100
    assert await stock_of(store, "FLT-002") == 1
    assert await stock_of(store, "MUG-003") == 100
    assert await reservation_rows(store, "r-short") == (0, 0)
    # So the id is still free for a reservation that fits.
    retry = await store.reserve("r-short", [Line("ESP-001", 5), Line("FLT-002", 1)])
    assert retry.total_cents == 5 * 2490 + 1190
    assert await stock_of(store, "FLT-002") == 0


async def test_reserve_names_every_short_item(store: InventoryStore) -> None:
    await store.set_stock("ESP-001", 0, "", 0)
    await store.set_stock("MUG-003", 2, "", 0)
    with pytest.raises(FailedPrecondition) as caught:
        await store.reserve("r-two", [Line("MUG-003", 3), Line("ESP-001", 1)])
    assert sorted(v.subject for v in caught.value.violations) == ["ESP-001", "MUG-003"]
    assert {v.type for v in caught.value.violations} == {"STOCK"}


async def test_reserve_unknown_sku_is_not_found_and_takes_nothing(store: InventoryStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.reserve("r-unknown", [Line("ESP-001", 1), Line("NOPE-999", 1)])
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert (caught.value.resource_type, caught.value.name) == ("product", "NOPE-999")
    assert await stock_of(store, "ESP-001") == 100
    assert await reservation_rows(store, "r-unknown") == (0, 0)


async def test_reserve_is_idempotent_by_id(store: InventoryStore) -> None:
    first = await store.reserve("r-idem", [Line("ESP-001", 4), Line("TEA-013", 1)])
    # A retry (even one whose items got garbled) gets the recorded reservation back.
    second = await store.reserve("r-idem", [Line("ESP-001", 4), Line("TEA-013", 1)])
    third = await store.reserve("r-idem", [Line("ESP-001", 99)])
    assert first == second == third
    assert await stock_of(store, "ESP-001") == 96
    assert await stock_of(store, "TEA-013") == 99


async def test_release_returns_stock_exactly_once(store: InventoryStore) -> None:
    await store.reserve("r-rel", [Line("ESP-001", 4), Line("MUG-003", 2)])
    assert await store.release("r-rel") is True
    assert await stock_of(store, "ESP-001") == 100
    assert await stock_of(store, "MUG-003") == 100
    assert await store.release("r-rel") is False
    assert await stock_of(store, "ESP-001") == 100
    # A late duplicate of the Reserve cannot take the stock again.
    with pytest.raises(FailedPrecondition) as caught:
        await store.reserve("r-rel", [Line("ESP-001", 4), Line("MUG-003", 2)])
    assert caught.value.violations[0].subject == "r-rel"
    assert await stock_of(store, "ESP-001") == 100


async def test_release_of_unknown_id_leaves_a_tombstone(store: InventoryStore) -> None:
    assert await store.release("r-never") is False
    assert await store.release("r-never") is False
    with pytest.raises(FailedPrecondition) as caught:
        await store.reserve("r-never", [Line("ESP-001", 1)])
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.violations[0].type == "RESERVATION"
    assert await stock_of(store, "ESP-001") == 100


def _outcomes(
    results: Sequence[Reservation | BaseException],
) -> tuple[list[Reservation], list[FailedPrecondition]]:
    accepted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    others = [r for r in results if not isinstance(r, Reservation | FailedPrecondition)]
    assert not others, f"unexpected outcomes: {others[:3]!r}"
    return accepted, refused


@pytest.mark.timeout(180)
async def test_concurrent_reserves_never_oversell(open_store: OpenStore) -> None:
    # Four stores with their own engines stand in for four replicas on one database.
    stores = [await open_store() for _ in range(4)]
    await stores[0].set_stock("SCARCE-1", 40, "Scarce", 500)
    results = await asyncio.gather(
        *(stores[n % len(stores)].reserve(f"c-{n}", [Line("SCARCE-1", 1)]) for n in range(100)),
        return_exceptions=True,
    )
    accepted, refused = _outcomes(results)
    assert sum(r.lines[0].quantity for r in accepted) == 40
    assert len(refused) == 60
    assert {v.subject for f in refused for v in f.violations} == {"SCARCE-1"}
    assert await stock_of(stores[0], "SCARCE-1") == 0


@pytest.mark.timeout(180)
async def test_concurrent_multi_item_reserves_stay_all_or_nothing(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(3)]
    await stores[0].set_stock("PAIR-A", 25, "A", 100)
    await stores[0].set_stock("PAIR-B", 60, "B", 100)
    # Opposite item orders in the requests: the store must lock in one order anyway.
    results = await asyncio.gather(
        *(
            stores[n % len(stores)].reserve(
                f"m-{n}",
                [Line("PAIR-A", 1), Line("PAIR-B", 2)]
                if n % 2
                else [Line("PAIR-B", 2), Line("PAIR-A", 1)],
            )
            for n in range(60)
        ),
        return_exceptions=True,
    )
    accepted, refused = _outcomes(results)
    assert len(accepted) == 25
    assert len(refused) == 35
    assert await stock_of(stores[0], "PAIR-A") == 0
    assert await stock_of(stores[0], "PAIR-B") == 60 - 2 * 25


async def test_concurrent_retries_of_one_reservation_take_stock_once(
    open_store: OpenStore,
) -> None:
    stores = [await open_store() for _ in range(3)]
    results = await asyncio.gather(
        *(stores[n % 3].reserve("same-id", [Line("GRD-004", 3)]) for n in range(12)),
        return_exceptions=True,
    )
    accepted, refused = _outcomes(results)
    assert not refused
    assert len(set(accepted)) == 1
    assert accepted[0].lines == (Line("GRD-004", 3, 8900),)
    assert await stock_of(stores[0], "GRD-004") == 97


async def test_concurrent_releases_return_stock_once(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(3)]
    await stores[0].reserve("rel-race", [Line("KTL-005", 10)])
    released = await asyncio.gather(*(stores[n % 3].release("rel-race") for n in range(9)))
    assert released.count(True) == 1
    assert await stock_of(stores[0], "KTL-005") == 100
