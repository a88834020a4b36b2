"""The inventory service's settings, read once from the environment when a replica
starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shop.runtime.config import DatabaseSettings, Setting, positive_int

SEED_STOCK = Setting(
    "SHOP_SEED_STOCK",
    "1000000",
    positive_int,
    "an integer > 0",
    "inventory: stock of each catalog product created on first start",
)

# What inventory reads beyond the runtime's shared settings (``shop env`` lists them).
SETTINGS: tuple[Setting[Any], ...] = (SEED_STOCK,)


@dataclass(frozen=True)
class InventorySettings:
    # Stock of each catalog product the first replica on an empty database creates.
    seed_stock: int
    database: DatabaseSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InventorySettings:
        env = os.environ if environ is None else environ
        return cls(
            seed_stock=SEED_STOCK.read(env),
            database=DatabaseSettings.from_env("inventory", env),
        )
