"""``headless-no-maxage``: a headless Service and nothing else.

In Kubernetes CoreDNS answers a headless Service's name with every ready pod; gRPC's
own DNS resolver and round_robin then balance per call over those pods. Without a
server max connection age healthy connections never close, so clients never
re-resolve and never see a pod added later. Here a cluster DNS in the lab process
answers ``<svc>.shop.svc.cluster.local`` and clients use round_robin.
"""

from __future__ import annotations

from shop.lab.dns import ClusterDns
from shop.lab.modes.base import Mode, ModeEnv


class HeadlessNoMaxAge(Mode):
    name = "headless-no-maxage"
    description = "headless Service: DNS + client round_robin, no max connection age"
    kubernetes = "headless Service; CoreDNS returns every ready pod"

    _dns: ClusterDns | None = None
    # The TTL of the cluster DNS's answers (CoreDNS's for a headless Service is 5 s);
    # set before start() to change it (the new-pod-wait scenario sweeps it).
    dns_ttl_s: int = 1

    async def wire(self, env: ModeEnv) -> None:
        plan = self.cluster.plan
        self._dns = ClusterDns(host=f"127.{plan.net}.0.53", ttl_s=self.dns_ttl_s)
        await self._dns.start()
        self.publishers.append(self._dns)
        env.common.update(
            SHOP_LB_POLICY="round_robin",
            SHOP_ORDERS_TARGET=self._dns.target("orders", plan.grpc_port),
            SHOP_INVENTORY_TARGET=self._dns.target("inventory", plan.grpc_port),
        )

    async def close(self) -> None:
        await super().close()
        if self._dns is not None:
            await self._dns.close()

    def node_client_target(self, service: str, port: int) -> tuple[str, dict[str, str]] | None:
        return None if self._dns is None else (self._dns.target(service, port), {})

    def resolutions(self, service: str) -> int:
        """How often clients have resolved ``service``'s name so far."""
        return 0 if self._dns is None else self._dns.resolutions(service)

    def counters(self) -> dict[str, int]:
        return {"dns_queries": self._dns.queries} if self._dns is not None else {}
