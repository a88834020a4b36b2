"""The lab's HAProxy against real replicas: like kube-proxy at a ClusterIP Service it
balances connections, not calls, so a connection stays on one pod; it takes endpoint
changes live, sending new connections to the new pods without ever running out of
pods, while connections already open stay where they are."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.lab.endpoints import Endpoint
from shop.lab.haproxy import HAProxy, HAProxyError
from shop.local.addresses import free_port
from shop.local.cluster import LocalCluster
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import inventory_pb2, inventory_pb2_grpc

from ..support.auth import caller_metadata, channel_with
from ..support.clusters import ClusterFactory

LIST = inventory_pb2.ListProductsRequest(page_size=5)
# Channels with their own subchannel pool open their own connection.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    return module_cluster_factory(gateway=1, orders=1, inventory=3)


def endpoints(cluster: LocalCluster, indexes: Iterable[int]) -> list[Endpoint]:
    chosen = []
    for replica in cluster.replicas_of("inventory"):
        if replica.index in indexes:
            ip, _, port = replica.grpc_addr.rpartition(":")
            chosen.append(Endpoint(replica.pod, ip, int(port)))
    return chosen


def listen_addr() -> str:
    return f"127.0.0.1:{free_port()}"


def as_orders(cluster: LocalCluster, address: str, **kwargs: Any) -> grpc.aio.Channel:
    """A channel whose calls carry orders' caller token, as orders' calls to
    inventory do (the proxies pass it through like any header)."""
    return channel_with(
        address, caller_metadata(cluster.credentials, "orders", INVENTORY_SERVICE), **kwargs
    )


async def list_products(stub: inventory_pb2_grpc.InventoryStub) -> str:
    """One ListProducts call; returns the inventory pod that served it."""
    call = stub.ListProducts(LIST, timeout=20)
    await call
    trailers = dict(await call.trailing_metadata())
    return parse_route(str(trailers[ROUTE_TRAILER]))["inventory"]


async def served_by(
    stub: inventory_pb2_grpc.InventoryStub, calls: int, parallel: int
) -> Counter[str]:
    pods: Counter[str] = Counter()

    async def worker(count: int) -> None:
        for _ in range(count):
            pods[await list_products(stub)] += 1

    await asyncio.gather(*(worker(calls // parallel) for _ in range(parallel)))
    return pods


async def test_l4_proxy_pins_a_connection_to_one_pod(cluster: LocalCluster, tmp_path: Path) -> None:
    address = listen_addr()
    async with HAProxy("service-ip", tmp_path, {"inventory": address}) as proxy:
        assert proxy.pid is not None
        await proxy.publish("inventory", endpoints(cluster, range(3)))

        async with as_orders(cluster, address) as channel:
            pods = await served_by(inventory_pb2_grpc.InventoryStub(channel), 90, parallel=9)
        assert len(pods) == 1, f"one connection must stay on one pod: {pods}"

        # Channels that each open their own connection: connections, not calls, are
        # spread.
        channels = [as_orders(cluster, address, options=OWN_CONNECTION) for _ in range(6)]
        try:
            per_channel = [
                await served_by(inventory_pb2_grpc.InventoryStub(ch), 12, parallel=3)
                for ch in channels
            ]
        finally:
            for ch in channels:
                await ch.close()
    assert all(len(pods) == 1 for pods in per_channel), per_channel
    reached = {pod for pods in per_channel for pod in pods}
    assert reached == {"inventory-0", "inventory-1", "inventory-2"}, per_channel


class WatchedHAProxy(HAProxy):
    """After every slot change publish() makes, asks HAProxy itself which addresses
    of the backend would take a new connection now."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_rotation: list[set[str]] = []

    async def command(self, line: str, timeout_s: float = 10.0) -> str:
        answer = await super().command(line, timeout_s)
        if line.startswith("set server "):
            backend = line.split()[2].partition("/")[0]
            stat = await super().command(f"show stat {backend} 4 -1")
            rows = csv.DictReader(io.StringIO(stat.removeprefix("# ")))
            self.in_rotation.append(
                {
                    row["addr"]
                    for row in rows
                    if row["svname"] != "BACKEND"
                    and not row["status"].startswith(("MAINT", "DRAIN"))
                }
            )
        return answer


@dataclass
class NewConnections:
    """Closed-loop callers that open a new connection (channel) for every call, and
    record when each started and which pod served it."""

    cluster: LocalCluster
    address: str
    workers: int = 2
    calls: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            try:
                async with as_orders(self.cluster, self.address, options=OWN_CONNECTION) as ch:
                    pod = await list_products(inventory_pb2_grpc.InventoryStub(ch))
            except grpc.aio.AioRpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
            else:
                self.calls.append((started, pod))
            self._progress.set()

    def pods_since(self, since: float) -> Counter[str]:
        return Counter(pod for started, pod in self.calls if started > since)

    async def wait_for(self, calls: int, since: float, timeout_s: float = 30) -> Counter[str]:
        """The pods of the first ``calls`` connections opened after ``since``."""

        async def check() -> None:
            while sum(self.pods_since(since).values()) < calls:
                assert not self.failures, self.failures[:5]
                self._progress.clear()
                await self._progress.wait()

        await asyncio.wait_for(check(), timeout_s)
        return self.pods_since(since)

    def stop(self) -> None:
        self._stop.set()


async def until_drained(proxy: HAProxy, service: str, serving: list[Endpoint]) -> None:
    """Waits until no pod of ``service`` but ``serving`` has a connection open."""
    wanted = {e.pod for e in serving}
    for _ in range(300):
        sessions = await proxy.sessions(service)
        if not any(n for pod, n in sessions.items() if pod not in wanted):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"drained pods still serve connections: {sessions}")


async def test_l4_proxy_moves_new_connections_when_endpoints_change(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Every connection opened after publish() returns goes to the new endpoint set;
    a connection already open stays on its pod, removed or not (drained, not cut);
    and at every step of a replacement some pod takes new connections, even when
    every pod is replaced. Two slots for three pods: drained slots are reused, idle
    ones and one still carrying a connection."""
    address = listen_addr()
    addresses = {e.address for e in endpoints(cluster, range(3))}
    proxy = WatchedHAProxy("service-ip", tmp_path, {"inventory": address}, max_backends=2)
    async with proxy, as_orders(cluster, address, options=OWN_CONNECTION) as held:
        held_stub = inventory_pb2_grpc.InventoryStub(held)
        current = endpoints(cluster, [0])
        await proxy.publish("inventory", current)
        assert await list_products(held_stub) == "inventory-0"
        proxy.in_rotation.clear()

        load = NewConnections(cluster, address)
        running = asyncio.create_task(load.run())
        loop = asyncio.get_running_loop()
        try:
            for indexes in ([0, 1], [1, 2], [2, 0], [0], [2], [1], [0, 1]):
                # [0] -> [2] replaces every pod by one whose slot is still draining
                # (the held connection's): revived before pod 0 leaves. [2] -> [1]
                # replaces every pod by one without a slot: it needs a free one, which
                # pod 0's drained slot becomes once its connections are gone.
                target = endpoints(cluster, indexes)
                if indexes == [1]:
                    await until_drained(proxy, "inventory", current)
                await proxy.publish("inventory", target)
                published = loop.time()
                current = target
                after = await load.wait_for(8, published)
                assert set(after) == {e.pod for e in target}, (indexes, after)
                assert await list_products(held_stub) == "inventory-0", indexes
        finally:
            load.stop()
            await running
    assert load.failures == [], load.failures[:5]
    # Every slot change publish() made left a pod in rotation (never the placeholder).
    assert len(proxy.in_rotation) >= 10, proxy.in_rotation
    assert all(ready and ready <= addresses for ready in proxy.in_rotation), proxy.in_rotation


async def test_start_failure_and_overflow_are_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        proxy = HAProxy("clash", tmp_path, {"inventory": busy})
        with pytest.raises(HAProxyError, match="exited with code"):
            await proxy.start(timeout_s=30)
    assert proxy.pid is None
    await proxy.close()  # harmless after a failed start

    proxy = HAProxy("small", tmp_path, {"inventory": listen_addr()}, max_backends=2)
    async with proxy:
        three = [Endpoint(f"inventory-{i}", f"127.0.0.{i + 1}", 50051) for i in range(3)]
        with pytest.raises(HAProxyError, match="raise max_backends"):
            await proxy.publish("inventory", three)
        await proxy.publish("inventory", three[:2])
        assert await proxy.sessions("inventory") == {"inventory-0": 0, "inventory-1": 0}
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGKILL)
        with pytest.raises(HAProxyError):
            await proxy.publish("inventory", three[:1])
