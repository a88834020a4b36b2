"""``istio``: Istio sidecars, as the chart's ``mode: istio`` deploys them.

In Kubernetes an Envoy beside each pod takes the pod's outgoing calls and balances
them per call (L7) over the endpoints istiod sends it. The lab has no Envoy: an
HAProxy HTTP/2 proxy (``proto h2`` on both sides) beside each client pod stands in
for it, balancing per call, its backends changed live through its runtime API. It
shows what a per-call L7 proxy does to balancing and cost, not Envoy's own figures
(nor mTLS, policies or a control plane).
"""

from __future__ import annotations

from shop.lab.haproxy import HAProxy
from shop.lab.modes.base import MAX_BACKENDS, Mode, ModeEnv

# The sidecar's listener per called service, on each client pod's own IP.
SIDECAR_PORTS = {"orders": 15001, "inventory": 15002}


class Istio(Mode):
    name = "istio"
    description = "sidecar L7 HTTP/2 proxy beside each client; HAProxy stands in for Envoy"
    kubernetes = "Istio sidecars: an Envoy beside each pod balances per call (L7)"
    needs_haproxy = True

    async def wire(self, env: ModeEnv) -> None:
        env.common["SHOP_LB_POLICY"] = "pick_first"  # to the sidecar; it balances
        for service, index in self.cluster.client_pods:
            ip = self.cluster.plan.ip(service, index)
            listeners = {s: f"{ip}:{p}" for s, p in SIDECAR_PORTS.items()}
            proxy = HAProxy(
                f"sidecar-{service}-{index}",
                self.cluster.work_dir,
                "http",
                listeners,
                MAX_BACKENDS,
            )
            await self.add_proxy(proxy)
            env.per_replica[(service, index)] = {
                "SHOP_ORDERS_TARGET": listeners["orders"],
                "SHOP_INVENTORY_TARGET": listeners["inventory"],
            }
