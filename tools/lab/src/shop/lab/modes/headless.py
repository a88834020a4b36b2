"""``headless``: a headless Service with a server max connection age, as the chart's
``mode: headless`` deploys it.

Servers send GOAWAY when a connection reaches its age; the client reconnects,
re-resolves and so finds pods added since. The chart uses an age of 30 s and lets
clients re-resolve after 5 s; the lab's runs are short, so here servers age
connections out after 2 s (+1 s grace) and clients may re-resolve after 1 s.
"""

from __future__ import annotations

from shop.lab.modes.base import CALLED_SERVICES, ModeEnv
from shop.lab.modes.headless_no_maxage import HeadlessNoMaxAge


class Headless(HeadlessNoMaxAge):
    name = "headless"
    description = "headless + server max_connection_age 2 s, re-resolution 1 s"
    kubernetes = "headless Service + server max_connection_age (the chart's mode: headless)"

    async def wire(self, env: ModeEnv) -> None:
        await super().wire(env)
        env.common["SHOP_DNS_MIN_RERESOLUTION_S"] = "1"
        for server in CALLED_SERVICES:
            env.per_service[server] = {
                "SHOP_MAX_CONNECTION_AGE_S": "2",
                "SHOP_MAX_CONNECTION_AGE_GRACE_S": "1",
            }
