"""Endpoint sets follow readiness: in once SERVING, out as soon as draining starts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shop.lab.endpoints import Endpoint, ReadinessTracker


class RecordingPublisher:
    def __init__(self) -> None:
        self.sets: list[tuple[str, list[str]]] = []

    async def publish(self, service: str, endpoints: Sequence[Endpoint]) -> None:
        self.sets.append((service, [e.pod for e in endpoints]))


async def test_draining_replica_leaves_before_it_stops(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(gateway=0, orders=0, inventory=2, drain_delay_s=3.0)
    plan = cluster.spec.plan
    publisher = RecordingPublisher()
    tracker = ReadinessTracker([publisher])
    endpoints = [
        Endpoint(f"inventory-{i}", plan.ip("inventory", i), plan.grpc_port) for i in range(2)
    ]
    try:
        for endpoint in endpoints:
            tracker.watch("inventory", endpoint)
        ready = await tracker.wait_for("inventory", lambda eps: len(eps) == 2, 30.0)
        assert [e.pod for e in ready] == ["inventory-0", "inventory-1"]

        victim = cluster.replicas_of("inventory")[1]
        cluster.signal_replica(victim)
        await tracker.wait_for("inventory", lambda eps: len(eps) == 1, 30.0)
        # Out of the set while the replica is still draining, i.e. before it stops.
        assert victim.alive()
        assert publisher.sets[-1] == ("inventory", ["inventory-0"])
        assert await asyncio.to_thread(cluster.wait_exit, victim, 30.0) == 0

        # Back in once it serves again (a restart keeps the pod's address).
        cluster.start_replica("inventory", 1)
        await tracker.wait_for("inventory", lambda eps: len(eps) == 2, 60.0)
        assert publisher.sets[-1] == ("inventory", ["inventory-0", "inventory-1"])
    finally:
        await tracker.close()


async def test_forgotten_endpoint_leaves_the_set(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(gateway=0, orders=0, inventory=1)
    plan = cluster.spec.plan
    publisher = RecordingPublisher()
    tracker = ReadinessTracker([publisher])
    endpoint = Endpoint("inventory-0", plan.ip("inventory", 0), plan.grpc_port)
    try:
        tracker.watch("inventory", endpoint)
        await tracker.wait_for("inventory", lambda eps: len(eps) == 1, 30.0)
        await tracker.forget(endpoint)
        assert tracker.ready("inventory") == []
        assert publisher.sets[-1] == ("inventory", [])
    finally:
        await tracker.close()
