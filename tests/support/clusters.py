"""Local clusters: the same replica processes ``shop up`` runs, each on its own
loopback IP, all stopped when the test is done."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import ClusterSpec, LocalCluster

# ``start(gateway=1, orders=2, inventory=2, **ClusterSpec arguments)`` -> a ready cluster.
ClusterFactory = Callable[..., LocalCluster]


@contextmanager
def local_clusters(new_data_dir: Callable[[], Path]) -> Iterator[ClusterFactory]:
    """Starts clusters on a free loopback net each, a fresh data directory each; every
    one is stopped on exit."""
    started: list[LocalCluster] = []

    def start(
        gateway: int = 1, orders: int = 2, inventory: int = 2, **spec_args: Any
    ) -> LocalCluster:
        spec_args.setdefault("data_dir", new_data_dir())
        spec_args.setdefault("plan", AddressPlan(net=free_net()))
        spec = ClusterSpec(
            replicas={"gateway": gateway, "orders": orders, "inventory": inventory}, **spec_args
        )
        cluster = LocalCluster(spec)
        started.append(cluster)
        cluster.start(timeout_s=90)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
