"""Endpoint sets that follow replica readiness, like Kubernetes EndpointSlices.

A replica enters its service's endpoint set once its gRPC health says SERVING and
leaves it as soon as it says anything else (it starts draining on SIGTERM) or stops
answering. Each change is pushed to every :class:`EndpointPublisher`: the cluster
DNS, the proxies and the xDS control plane all see the same sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

CLUSTER_DOMAIN = "shop.svc.cluster.local"


@dataclass(frozen=True, order=True)
class Endpoint:
    """One ready replica: its pod name and ``ip:port``."""

    pod: str
    ip: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


def service_host(service: str) -> str:
    """``orders`` -> ``orders.shop.svc.cluster.local``."""
    return f"{service}.{CLUSTER_DOMAIN}"


class EndpointPublisher(Protocol):
    """Something that routes to a service's ready endpoints (DNS, a proxy, xDS)."""

    async def publish(self, service: str, endpoints: Sequence[Endpoint]) -> None:
        """Replaces the endpoint set of ``service``; an empty set is valid."""
        ...


class ReadinessTracker:
    """Watches each replica's health and keeps the endpoint sets of every service."""

    def __init__(self, publishers: Sequence[EndpointPublisher]) -> None:
        self._publishers = list(publishers)
        self._ready: dict[str, set[Endpoint]] = {}
        self._watches: dict[Endpoint, asyncio.Task[None]] = {}
        self._service_of: dict[Endpoint, str] = {}
        self._changed = asyncio.Condition()

    def ready(self, service: str) -> list[Endpoint]:
        return sorted(self._ready.get(service, set()))

    def watch(self, service: str, endpoint: Endpoint) -> None:
        """Starts following ``endpoint``'s health (until :meth:`forget` or close)."""
        if endpoint in self._watches:
            return
        self._service_of[endpoint] = service
        self._ready.setdefault(service, set())
        self._watches[endpoint] = asyncio.get_running_loop().create_task(
            self._follow(service, endpoint)
        )

    async def forget(self, endpoint: Endpoint) -> None:
        task = self._watches.pop(endpoint, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        service = self._service_of.pop(endpoint, None)
        if service is not None:
            await self._set(service, endpoint, ready=False)

    async def wait_for(
        self, service: str, predicate: Callable[[list[Endpoint]], bool], timeout_s: float
    ) -> list[Endpoint]:
        """Waits until ``predicate(ready endpoints)`` is true; returns the set."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.ready(service))), timeout_s
            )
        return self.ready(service)

    async def close(self) -> None:
        for endpoint in list(self._watches):
            task = self._watches.pop(endpoint)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _set(self, service: str, endpoint: Endpoint, *, ready: bool) -> None:
        members = self._ready.setdefault(service, set())
        if (endpoint in members) == ready:
            return
        if ready:
            members.add(endpoint)
        else:
            members.discard(endpoint)
        current = self.ready(service)
        log.info("endpoints %s: %s", service, [e.pod for e in current])
        for publisher in self._publishers:
            await publisher.publish(service, current)
        async with self._changed:
            self._changed.notify_all()

    async def _follow(self, service: str, endpoint: Endpoint) -> None:
        """Health.Watch on the replica; reconnects while the replica is expected to live."""
        request = health_pb2.HealthCheckRequest(service="")
        while True:
            try:
                async with grpc.aio.insecure_channel(endpoint.address) as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    async for reply in stub.Watch(request):
                        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                        await self._set(service, endpoint, ready=serving)
            except grpc.aio.AioRpcError:
                pass
            # The stream ended. A replica that drains says NOT_SERVING on it first, so
            # this is either a replica gone or not up yet, or only the stream's
            # connection closed (servers with a max connection age close every
            # connection, this one too). Ask once more before taking the replica out:
            # flapping it out of DNS on every aged connection made clients that
            # re-resolved at that moment drop a healthy pod until their next
            # re-resolution (steady shares of 70/30 under max age).
            if not await _serving(endpoint):
                await self._set(service, endpoint, ready=False)
            await asyncio.sleep(0.1)


async def _serving(endpoint: Endpoint, timeout_s: float = 1.0) -> bool:
    """One gRPC health Check on a fresh connection: is the replica SERVING now?"""
    try:
        async with grpc.aio.insecure_channel(endpoint.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
