"""``clusterip``: a ClusterIP Service, the problem the project is about.

In Kubernetes kube-proxy balances per *connection* (L4) behind a virtual service IP;
a gRPC client keeps one connection, so all its calls land on one pod. Here an HAProxy
in ``mode tcp`` listens on a "service IP" per service and clients use pick_first.
"""

from __future__ import annotations

from shop.lab.haproxy import HAProxy
from shop.lab.modes.base import CALLED_SERVICES, MAX_BACKENDS, Mode, ModeEnv

# The replica octet of a service IP: one no pod gets (127.N.<service>.250).
SERVICE_IP_OCTET = 250
_SERVICE_OCTETS = {"orders": 2, "inventory": 3}


class ClusterIp(Mode):
    name = "clusterip"
    description = "ClusterIP: L4 proxy per connection, clients pick_first"
    kubernetes = "ClusterIP Service; kube-proxy balances per connection (L4)"
    needs_haproxy = True

    async def wire(self, env: ModeEnv) -> None:
        listeners = {s: self.service_ip(s) for s in CALLED_SERVICES}
        proxy = HAProxy("kube-proxy", self.cluster.work_dir, listeners, MAX_BACKENDS)
        await self.add_proxy(proxy)
        env.common.update(
            SHOP_LB_POLICY="pick_first",
            SHOP_ORDERS_TARGET=listeners["orders"],
            SHOP_INVENTORY_TARGET=listeners["inventory"],
        )

    def service_ip(self, service: str) -> str:
        plan = self.cluster.plan
        octet = _SERVICE_OCTETS[service]
        return f"127.{plan.net}.{octet}.{SERVICE_IP_OCTET}:{plan.grpc_port}"
