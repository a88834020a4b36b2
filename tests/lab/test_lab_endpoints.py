"""Endpoint sets follow readiness: in once SERVING, out as soon as draining starts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

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


class CountingHealth(HealthServicer):  # type: ignore[misc]
    """SERVING throughout; counts the Watch streams opened on it."""

    def __init__(self) -> None:
        super().__init__()
        self.watches = 0
        self.more_watches = asyncio.Event()

    async def Watch(self, request: Any, context: Any) -> None:
        self.watches += 1
        self.more_watches.set()
        await super().Watch(request, context)


async def test_a_serving_replica_stays_in_while_its_connections_age_out() -> None:
    """A server with a max connection age closes the tracker's Watch connection too;
    the replica never stopped serving, so it must not leave the endpoint set (it did:
    DNS dropped it for a moment every age, and clients that re-resolved then dropped a
    healthy pod, 70/30 shares under max age)."""
    health = CountingHealth()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    server = grpc.aio.server(
        options=[("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 100)]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    publisher = RecordingPublisher()
    tracker = ReadinessTracker([publisher])
    try:
        tracker.watch("inventory", Endpoint("inventory-0", "127.0.0.1", port))
        await tracker.wait_for("inventory", lambda eps: len(eps) == 1, 30.0)
        # Three connections aged out and watched again (bounded, not a fixed sleep).
        while health.watches < 4:
            health.more_watches.clear()
            await asyncio.wait_for(health.more_watches.wait(), 30.0)
        assert publisher.sets == [("inventory", ["inventory-0"])]
    finally:
        await tracker.close()
        await server.stop(None)
