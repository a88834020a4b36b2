"""``proxyless``: proxyless gRPC with istiod, as the chart's ``mode: proxyless``.

The gRPC client itself speaks xDS: ``xds:///`` targets, listeners, routes, clusters
and endpoints pushed by a control plane, balanced per call with no proxy. Here an ADS
control plane in the lab process plays istiod, and a bootstrap file points the
replicas at it.
"""

from __future__ import annotations

from pathlib import Path

from shop.lab.modes.base import Mode, ModeEnv
from shop.lab.xds import XdsControlPlane


class Proxyless(Mode):
    name = "proxyless"
    description = "proxyless gRPC: xds:/// targets, ADS control plane"
    kubernetes = "proxyless gRPC: clients take endpoints from istiod over xDS"

    _xds: XdsControlPlane | None = None
    _bootstrap: Path | None = None

    async def wire(self, env: ModeEnv) -> None:
        plan = self.cluster.plan
        self._xds = XdsControlPlane(host=f"127.{plan.net}.0.15")
        await self._xds.start()
        self.publishers.append(self._xds)
        bootstrap = self._xds.write_bootstrap(self.cluster.work_dir / "xds-bootstrap.json")
        self._bootstrap = bootstrap
        env.common.update(
            GRPC_XDS_BOOTSTRAP=str(bootstrap),
            SHOP_ORDERS_TARGET=self._xds.target("orders", plan.grpc_port),
            SHOP_INVENTORY_TARGET=self._xds.target("inventory", plan.grpc_port),
        )

    async def close(self) -> None:
        await super().close()
        if self._xds is not None:
            await self._xds.close()

    def node_client_target(self, service: str, port: int) -> tuple[str, dict[str, str]] | None:
        if self._xds is None or self._bootstrap is None:
            return None
        # grpc-js-xds reads the same bootstrap file as the Python replicas.
        return self._xds.target(service, port), {"GRPC_XDS_BOOTSTRAP": str(self._bootstrap)}

    def counters(self) -> dict[str, int]:
        return {"xds_pushes": self._xds.pushes} if self._xds is not None else {}
