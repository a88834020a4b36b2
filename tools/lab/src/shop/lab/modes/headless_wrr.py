"""``headless-wrr``: the chart's headless mode with ``headless.loadBalancingPolicy:
weighted_round_robin``.

The same DNS and max connection age as ``headless``; clients balance with gRPC's
``weighted_round_robin`` (gRFC A58), which weighs each pod by the ORCA load report on
its answers (``shop.runtime.orca``: CPU utilization against the pod's limit, calls/s,
errors/s), so a pod that is slower than its peers, or failing, gets fewer calls.

Like the chart, no blackout: gRPC would ignore a pod's weight for its blackout period
after every reconnect, and the max connection age reconnects every few seconds here
(see ``shop.runtime.config.WeightedRoundRobin`` for what that cost when measured).
"""

from __future__ import annotations

from shop.lab.modes.base import ModeEnv
from shop.lab.modes.headless import Headless

# The chart's: a reconnected pod's weight counts from its first report.
BLACKOUT_S = 0.0


class HeadlessWrr(Headless):
    name = "headless-wrr"
    description = "headless + weighted_round_robin from the pods' ORCA load reports"
    kubernetes = "headless Service, clients weigh pods by their load reports (gRFC A58)"

    async def wire(self, env: ModeEnv) -> None:
        await super().wire(env)
        env.common.update(
            SHOP_LB_POLICY="weighted_round_robin",
            SHOP_WRR_BLACKOUT_S=str(BLACKOUT_S),
            SHOP_ORCA_REPORTS="true",
        )
