"""What every balancing mode is: a name, what it stands for, and the infrastructure it
runs for one lab cluster.

A mode owns its infrastructure processes (proxies) and in-process servers (DNS,
xDS): it starts them, tells the cluster which environment each replica needs, and
lists the endpoint publishers the readiness tracker must feed. The modes themselves
are one module each beside this one; ``shop.lab.modes`` maps their names to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from shop.lab.endpoints import EndpointPublisher
from shop.lab.haproxy import HAProxy
from shop.local.addresses import AddressPlan

# Services a client calls through a mode's wiring (the gateway is only called by the
# load generator, straight at its address).
CALLED_SERVICES = ("orders", "inventory")
# Backends one proxy listener can hold: the lab scales inventory up to 8.
MAX_BACKENDS = 8


@dataclass
class ModeEnv:
    """Environment for the replicas: for all, per service, and per replica."""

    common: dict[str, str] = field(default_factory=dict)
    per_service: dict[str, dict[str, str]] = field(default_factory=dict)
    per_replica: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)

    def for_replica(self, service: str, index: int) -> Mapping[str, str]:
        return self.per_replica.get((service, index), {})


@dataclass(frozen=True)
class LabCluster:
    """What a mode wires for: the cluster's addresses and a folder for its files."""

    plan: AddressPlan
    work_dir: Path


class Mode(ABC):
    """Infrastructure of one balancing mode for one lab cluster."""

    # The name on the command line, in results and as SHOP_MODE (the chart's where the
    # two mean the same thing).
    name: ClassVar[str]
    # One line for the lab's table and page: what runs here.
    description: ClassVar[str]
    # The Kubernetes set-up this mode stands for.
    kubernetes: ClassVar[str]
    # Whether the mode runs HAProxy or Envoy (checked before a lab starts).
    needs_haproxy: ClassVar[bool] = False
    needs_envoy: ClassVar[bool] = False

    def __init__(self, cluster: LabCluster) -> None:
        self.cluster = cluster
        self.publishers: list[EndpointPublisher] = []
        self._proxies: list[HAProxy] = []

    async def start(self) -> ModeEnv:
        """Starts the mode's infrastructure; returns the environment the replicas need."""
        # Every replica reports its mode on shop_instance_info, as the chart's pods do.
        env = ModeEnv(common={"SHOP_MODE": self.name})
        await self.wire(env)
        return env

    @abstractmethod
    async def wire(self, env: ModeEnv) -> None:
        """Starts what the mode runs and adds the replicas' settings for it to ``env``."""

    async def pod_starting(self, service: str, index: int) -> None:  # noqa: B027 (a hook)
        """Called before a replica's process starts (again, on a restart): what the pod
        needs beside it must be up by the time this returns (a sidecar)."""

    async def close(self) -> None:
        for proxy in self._proxies:
            await proxy.close()

    def proxy_pids(self) -> list[int]:
        """The proxies' processes, whose CPU the mode pays for."""
        return [p.pid for p in self._proxies if p.pid is not None]

    async def mesh_requests(self) -> dict[str, dict[str, int]]:
        """Requests per pod of each called service as the proxies counted them so far
        (``{service: {pod: calls}}``); empty where the mode's proxies count none."""
        return {}

    def counters(self) -> dict[str, int]:
        """Control-plane activity (DNS queries answered, xDS responses pushed)."""
        return {}

    def node_client_target(self, service: str, port: int) -> tuple[str, dict[str, str]] | None:
        """Where a Node.js client outside the pods reaches ``service`` the way this mode's
        clients do, and the environment it needs; None where the mode offers none (a
        ClusterIP's callers dial one address, a sidecar's callers their own sidecar)."""
        return None

    async def add_proxy(self, proxy: HAProxy) -> None:
        self._proxies.append(proxy)
        self.publishers.append(proxy)
        await proxy.start()
