"""``istio``: Istio's data plane, as the chart's ``mode: istio`` deploys it.

Every pod of gateway, orders and inventory gets a real Envoy beside it, started before
the app (as ``holdApplicationUntilProxyStarts`` does) and configured only over ADS by
the lab's control plane, the same one that feeds the proxyless mode: one local istiod,
two data planes. A call takes two proxy hops: the app dials its own sidecar (plain
text, pick_first), which balances the call (LEAST_REQUEST, slow start, outlier
detection, Istio's default retries) over the callee's sidecars with mutual TLS; the
callee's sidecar checks the caller's identity against the AuthorizationPolicy and hands
the call to the app on the pod's IP. See ``shop.lab.sidecar_resources`` for what each
sidecar gets and how the lab differs from a cluster (no iptables capture).

A restarted replica keeps its pod's sidecar, as a container restart does.
"""

from __future__ import annotations

from shop.lab.envoy import Envoy, EnvoyError
from shop.lab.modes.base import MAX_BACKENDS, LabCluster, Mode, ModeEnv
from shop.lab.sidecar_resources import INBOUND_PORT, OUTBOUND_PORTS, SidecarPod
from shop.lab.xds import XdsControlPlane

# The services whose pods get a sidecar.
MESH_SERVICES = ("gateway", "orders", "inventory")


class Istio(Mode):
    name = "istio"
    description = "Envoy sidecars: L7 per call, mTLS, authorization, xDS from the lab"
    kubernetes = "Istio sidecars: an Envoy beside each pod balances per call (L7)"
    needs_envoy = True

    _xds: XdsControlPlane | None = None

    def __init__(self, cluster: LabCluster) -> None:
        super().__init__(cluster)
        self.sidecars: dict[str, Envoy] = {}

    def pod(self, service: str, index: int) -> SidecarPod:
        return SidecarPod(service, index, self.cluster.plan.ip(service, index))

    async def wire(self, env: ModeEnv) -> None:
        plan = self.cluster.plan
        self._xds = XdsControlPlane(host=f"127.{plan.net}.0.15")
        await self._xds.start()
        self.publishers.append(self._xds)
        env.common["SHOP_LB_POLICY"] = "pick_first"  # to the sidecar; it balances
        for service in MESH_SERVICES:
            for index in range(MAX_BACKENDS):
                pod = self.pod(service, index)
                env.per_replica[(service, index)] = {
                    "SHOP_ORDERS_TARGET": pod.outbound_address("orders"),
                    "SHOP_INVENTORY_TARGET": pod.outbound_address("inventory"),
                }

    @property
    def control_plane(self) -> XdsControlPlane:
        if self._xds is None:
            raise RuntimeError("the istio mode is not started")
        return self._xds

    async def pod_starting(self, service: str, index: int) -> None:
        pod = self.pod(service, index)
        if pod.name in self.sidecars:
            return
        self.control_plane.add_sidecar(pod, self.cluster.plan.grpc_port)
        envoy = Envoy(pod, self.control_plane.address, self.cluster.work_dir)
        await envoy.start()
        self.sidecars[pod.name] = envoy

    async def close(self) -> None:
        await super().close()
        for envoy in self.sidecars.values():
            await envoy.close()
        if self._xds is not None:
            await self._xds.close()

    def proxy_pids(self) -> list[int]:
        return [e.pid for e in self.sidecars.values() if e.pid is not None]

    def counters(self) -> dict[str, int]:
        return {"xds_pushes": self._xds.pushes} if self._xds is not None else {}

    async def mesh_requests(self) -> dict[str, dict[str, int]]:
        """Per pod, the calls every sidecar sent it (Envoy's per-endpoint counters)."""
        pod_at = {f"{envoy.pod.ip}:{INBOUND_PORT}": envoy.pod for envoy in self.sidecars.values()}
        counted: dict[str, dict[str, int]] = {s: {} for s in OUTBOUND_PORTS}
        for envoy in list(self.sidecars.values()):
            if envoy.pid is None:
                continue
            try:
                counts = await envoy.endpoint_counts()
            except (EnvoyError, OSError, TimeoutError):
                continue  # a sidecar that is going away: its pod's calls are lost with it
            for count in counts:
                pod = pod_at.get(count.address)
                if pod is not None and pod.service in counted:
                    per_pod = counted[pod.service]
                    per_pod[pod.name] = per_pod.get(pod.name, 0) + count.requests
        return counted
