"""The products a fresh inventory starts with (inserted once, never overwritten)."""

from __future__ import annotations

from typing import NamedTuple


class CatalogEntry(NamedTuple):
    sku: str
    name: str
    price_cents: int


SEED_CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("ESP-001", "Espresso beans, 1 kg", 2490),
    CatalogEntry("FLT-002", "Filter coffee, 500 g", 1190),
    CatalogEntry("MUG-003", "Stoneware mug", 1450),
    CatalogEntry("GRD-004", "Burr grinder", 8900),
    CatalogEntry("KTL-005", "Gooseneck kettle", 5400),
    CatalogEntry("SCL-006", "Brew scale", 3200),
    CatalogEntry("DRP-007", "Ceramic dripper", 2300),
    CatalogEntry("PAP-008", "Paper filters, 100", 650),
    CatalogEntry("TMP-009", "Espresso tamper", 2900),
    CatalogEntry("CUP-010", "Cupping spoon", 990),
    CatalogEntry("FRN-011", "French press", 3600),
    CatalogEntry("AER-012", "Travel press", 3900),
    CatalogEntry("TEA-013", "Green tea, 100 g", 850),
    CatalogEntry("TIN-014", "Airtight canister", 2100),
    CatalogEntry("BRU-015", "Cleaning brush", 450),
    CatalogEntry("DES-016", "Descaler", 1250),
)
