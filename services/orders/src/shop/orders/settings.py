"""The orders service's settings, read once from the environment when a replica starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shop.api.targets import INVENTORY_TARGET
from shop.runtime.config import DOWNSTREAM_TIMEOUT_S, DatabaseSettings, Setting
from shop.runtime.streams import StreamConfig

# What orders reads beyond the runtime's shared settings (``shop env`` lists them).
SETTINGS: tuple[Setting[Any], ...] = (INVENTORY_TARGET,)

RECONCILE_INTERVAL_S = 5.0
# Reserve is capped at SHOP_DOWNSTREAM_TIMEOUT_S; anything PENDING for much longer
# than that has no request working on it any more.
STALE_MARGIN_S = 25.0
# How often the replica's one watch poll looks for changes of watched orders: the
# most a WatchOrder event lags the change (it costs one query per interval, however
# many streams are open).
WATCH_INTERVAL_S = 0.5


@dataclass(frozen=True)
class OrdersSettings:
    inventory_target: str
    database: DatabaseSettings
    # Reserve's deadline when the incoming call has none; it also bounds how long a
    # placement can be at work, so the reconciler's idea of "stale" derives from it.
    downstream_timeout_s: float
    streams: StreamConfig
    # Timing fixed by the code, not by a variable; tests shorten it.
    reconcile_interval_s: float = RECONCILE_INTERVAL_S
    stale_margin_s: float = STALE_MARGIN_S
    watch_interval_s: float = WATCH_INTERVAL_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OrdersSettings:
        env = os.environ if environ is None else environ
        return cls(
            inventory_target=INVENTORY_TARGET.read(env),
            database=DatabaseSettings.from_env("orders", env),
            downstream_timeout_s=DOWNSTREAM_TIMEOUT_S.read(env),
            streams=StreamConfig.from_env(env),
        )
