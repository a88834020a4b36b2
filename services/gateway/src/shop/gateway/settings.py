"""The gateway's settings, read once from the environment when a replica starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shop.api.targets import INVENTORY_TARGET, ORDERS_TARGET
from shop.runtime.config import Setting
from shop.runtime.streams import StreamConfig

# What the gateway reads beyond the runtime's shared settings (``shop env`` lists them).
SETTINGS: tuple[Setting[Any], ...] = (ORDERS_TARGET, INVENTORY_TARGET)


@dataclass(frozen=True)
class GatewaySettings:
    orders_target: str
    inventory_target: str
    # Caps and lifetime of the WatchOrder streams it passes on from orders.
    streams: StreamConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ
        return cls(
            orders_target=ORDERS_TARGET.read(env),
            inventory_target=INVENTORY_TARGET.read(env),
            streams=StreamConfig.from_env(env),
        )
