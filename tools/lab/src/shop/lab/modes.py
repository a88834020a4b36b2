"""The balancing modes and what each one wires between the replicas.

Each mode is the local counterpart of one Kubernetes set-up (see DESIGN.md):

- clusterip: a ClusterIP Service (kube-proxy, L4) -> HAProxy ``mode tcp`` at a service
  IP, per connection; clients pick_first.
- headless: a headless Service + CoreDNS -> the cluster DNS; gRPC's own DNS resolver
  with round_robin.
- headless-maxage: the same, and servers send GOAWAY after 2 s
  (``max_connection_age``) while clients may re-resolve after 1 s.
- sidecar: Istio sidecars (Envoy, L7) -> an HAProxy HTTP/2 proxy beside each client
  pod, balancing per call.
- proxyless: proxyless gRPC with istiod -> the ADS control plane; ``xds:///`` targets.

A mode owns its infrastructure processes (proxies) and in-process servers (DNS,
xDS): it starts them, tells the cluster which environment each replica needs, and
lists the endpoint publishers the readiness tracker must feed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shop.lab.dns import ClusterDns
from shop.lab.endpoints import EndpointPublisher
from shop.lab.haproxy import HAProxy
from shop.lab.xds import XdsControlPlane
from shop.local.addresses import AddressPlan

MODE_NAMES = ("clusterip", "headless", "headless-maxage", "sidecar", "proxyless")

DESCRIPTIONS = {
    "clusterip": "ClusterIP: L4 proxy per connection, clients pick_first",
    "headless": "headless Service: DNS + client round_robin",
    "headless-maxage": "headless + server max_connection_age 2 s, re-resolution 1 s",
    "sidecar": "L7 HTTP/2 sidecar proxy beside each client (Istio's data plane)",
    "proxyless": "proxyless gRPC: xds:/// targets, ADS control plane",
}

# The replica octet of the "service IP" of a ClusterIP Service (never a pod's).
SERVICE_IP_OCTET = 250
SIDECAR_PORTS = {"orders": 15001, "inventory": 15002}
MAX_BACKENDS = 8


@dataclass
class ModeEnv:
    """Environment for the replicas: for all, per service, and per replica."""

    common: dict[str, str]
    per_service: dict[str, dict[str, str]]
    per_replica: dict[tuple[str, int], dict[str, str]]

    def for_replica(self, service: str, index: int) -> Mapping[str, str]:
        return self.per_replica.get((service, index), {})


class Mode:
    """Infrastructure of one balancing mode for a cluster described by ``plan``."""

    def __init__(
        self, name: str, plan: AddressPlan, work_dir: Path, client_pods: Sequence[tuple[str, int]]
    ) -> None:
        if name not in MODE_NAMES:
            raise ValueError(f"unknown mode {name!r}: choose from {', '.join(MODE_NAMES)}")
        self.name = name
        self.description = DESCRIPTIONS[name]
        self._plan = plan
        self._work_dir = work_dir
        self._client_pods = list(client_pods)
        self._proxies: list[HAProxy] = []
        self._dns: ClusterDns | None = None
        self._xds: XdsControlPlane | None = None
        self.publishers: list[EndpointPublisher] = []

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> ModeEnv:
        plan = self._plan
        port = plan.grpc_port
        env = ModeEnv(common={}, per_service={}, per_replica={})
        if self.name == "clusterip":
            listeners = {s: self._service_ip(s) for s in ("orders", "inventory")}
            proxy = HAProxy("kube-proxy", self._work_dir, "tcp", listeners, MAX_BACKENDS)
            await self._add_proxy(proxy)
            env.common.update(
                SHOP_LB_POLICY="pick_first",
                SHOP_ORDERS_TARGET=listeners["orders"],
                SHOP_INVENTORY_TARGET=listeners["inventory"],
            )
        elif self.name in ("headless", "headless-maxage"):
            self._dns = ClusterDns(host=f"127.{plan.net}.0.53")
            await self._dns.start()
            self.publishers.append(self._dns)
            env.common.update(
                SHOP_LB_POLICY="round_robin",
                SHOP_ORDERS_TARGET=self._dns.target("orders", port),
                SHOP_INVENTORY_TARGET=self._dns.target("inventory", port),
            )
            if self.name == "headless-maxage":
                env.common["SHOP_DNS_MIN_RERESOLUTION_S"] = "1"
                for server in ("orders", "inventory"):
                    env.per_service[server] = {
                        "SHOP_MAX_CONNECTION_AGE_S": "2",
                        "SHOP_MAX_CONNECTION_AGE_GRACE_S": "1",
                    }
        elif self.name == "sidecar":
            env.common["SHOP_LB_POLICY"] = "pick_first"  # to the sidecar; it balances
            for service, index in self._client_pods:
                ip = plan.ip(service, index)
                listeners = {s: f"{ip}:{p}" for s, p in SIDECAR_PORTS.items()}
                proxy = HAProxy(
                    f"sidecar-{service}-{index}", self._work_dir, "http", listeners, MAX_BACKENDS
                )
                await self._add_proxy(proxy)
                env.per_replica[(service, index)] = {
                    "SHOP_ORDERS_TARGET": listeners["orders"],
                    "SHOP_INVENTORY_TARGET": listeners["inventory"],
                }
        else:  # proxyless
            self._xds = XdsControlPlane(host=f"127.{plan.net}.0.15")
            await self._xds.start()
            self.publishers.append(self._xds)
            bootstrap = self._xds.write_bootstrap(self._work_dir / "xds-bootstrap.json")
            env.common.update(
                GRPC_XDS_BOOTSTRAP=str(bootstrap),
                SHOP_ORDERS_TARGET=self._xds.target("orders", port),
                SHOP_INVENTORY_TARGET=self._xds.target("inventory", port),
            )
        return env

    async def close(self) -> None:
        for proxy in self._proxies:
            await proxy.close()
        if self._dns is not None:
            await self._dns.close()
        if self._xds is not None:
            await self._xds.close()

    # --- what the lab measures --------------------------------------------------------

    def proxy_pids(self) -> list[int]:
        return [p.pid for p in self._proxies if p.pid is not None]

    def counters(self) -> dict[str, int]:
        """Control-plane activity: DNS queries answered, xDS responses pushed."""
        found: dict[str, int] = {}
        if self._dns is not None:
            found["dns_queries"] = self._dns.queries
        if self._xds is not None:
            found["xds_pushes"] = self._xds.pushes
        return found

    def _service_ip(self, service: str) -> str:
        octet = {"orders": 2, "inventory": 3}[service]
        return f"127.{self._plan.net}.{octet}.{SERVICE_IP_OCTET}:{self._plan.grpc_port}"

    async def _add_proxy(self, proxy: HAProxy) -> None:
        self._proxies.append(proxy)
        self.publishers.append(proxy)
        await proxy.start()
