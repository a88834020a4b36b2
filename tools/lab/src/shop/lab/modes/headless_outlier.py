"""``headless-outlier``: the chart's headless mode with ``headless.outlierDetection``.

round_robin inside gRPC's outlier detection (gRFC A50, failure-percentage ejection):
each interval, a pod that answered enough calls and failed more than half of them is
ejected, and gets no calls until its ejection ends. gRPC's own defaults (5 hosts at
least, 50 calls per interval, 10% ejected at most) eject nothing in a Service of 2-4
pods, which is why the chart and the lab set their own; the lab also judges every
second instead of the chart's 10 s, as its runs last seconds.
"""

from __future__ import annotations

from shop.lab.modes.base import ModeEnv
from shop.lab.modes.headless import Headless

OUTLIER_ENV = {
    "SHOP_OUTLIER_DETECTION": "true",
    "SHOP_OUTLIER_INTERVAL_S": "1",
    # Longer than any lab run: an ejected pod stays out, so the run shows one ejection.
    "SHOP_OUTLIER_BASE_EJECTION_S": "30",
    "SHOP_OUTLIER_MAX_EJECTION_PERCENT": "50",
    "SHOP_OUTLIER_FAILURE_PERCENT": "50",
    "SHOP_OUTLIER_MIN_HOSTS": "2",
    "SHOP_OUTLIER_REQUEST_VOLUME": "10",
}


class HeadlessOutlier(Headless):
    name = "headless-outlier"
    description = "headless + round_robin inside gRPC outlier detection (1 s interval)"
    kubernetes = "headless Service, clients eject pods that fail most calls (gRFC A50)"

    async def wire(self, env: ModeEnv) -> None:
        await super().wire(env)
        env.common.update(OUTLIER_ENV)
