"""The lab's HAProxy against real replicas: in TCP mode it pins a connection to one pod
like a ClusterIP Service; in HTTP/2 mode it balances every call like a sidecar, keeps
gRPC status codes and trailers intact, and takes endpoint changes live without failing
a single call."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.lab.endpoints import Endpoint
from shop.lab.haproxy import Balance, HAProxy, HAProxyError
from shop.local.addresses import free_port
from shop.local.cluster import LocalCluster
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.runtime.errors import STATUS_DETAILS_KEY
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc

from ..support.auth import caller_metadata, channel_with
from ..support.clusters import ClusterFactory

LIST = inventory_pb2.ListProductsRequest(page_size=5)


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
    async with HAProxy("service-ip", tmp_path, "tcp", {"inventory": address}) as proxy:
        assert proxy.pid is not None
        await proxy.publish("inventory", endpoints(cluster, range(3)))

        async with as_orders(cluster, address) as channel:
            pods = await served_by(inventory_pb2_grpc.InventoryStub(channel), 90, parallel=9)
        assert len(pods) == 1, f"one connection must stay on one pod: {pods}"

        # Channels with their own subchannel pool each open their own connection:
        # connections, not calls, are spread.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [as_orders(cluster, address, options=options) for _ in range(6)]
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


# Calls in flight at once from one channel, per algorithm. Round robin ignores load, so
# ten at a time must still be spread evenly. Least connections is load-aware by design:
# with ten in flight a replica that the scheduler of a busy 2-core machine happens to
# slow down holds its calls longer and rightly gets fewer new ones (49 of 300 was seen),
# so an even split is only its promise between replicas of equal load. One call at a
# time makes every pick a tie (each replica has none in flight), and HAProxy breaks
# ties by round robin: the same floor then holds whatever the machine is doing.
IN_FLIGHT: dict[Balance, int] = {"roundrobin": 10, "leastconn": 1}


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn"])
async def test_l7_sidecar_balances_each_call(
    cluster: LocalCluster, tmp_path: Path, balance: Balance
) -> None:
    address = listen_addr()
    proxy = HAProxy("sidecar", tmp_path, "http", {"inventory": address}, balance=balance)
    # Published before start: applied once the process is up.
    await proxy.publish("inventory", endpoints(cluster, range(3)))
    async with proxy, as_orders(cluster, address) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        pods = await served_by(stub, 300, parallel=IN_FLIGHT[balance])
    assert set(pods) == {"inventory-0", "inventory-1", "inventory-2"}, pods
    assert min(pods.values()) >= 60, f"each pod must get >= 20% of 300 calls: {pods}"


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    raw = dict(error.trailing_metadata() or ()).get(STATUS_DETAILS_KEY)
    assert raw is not None, f"{error.code().name} lost its details trailer: {error.details()}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    return status


async def test_l7_sidecar_passes_status_codes_and_trailers(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    address = listen_addr()
    async with HAProxy("sidecar", tmp_path, "http", {"inventory": address}) as proxy:
        await proxy.publish("inventory", endpoints(cluster, range(3)))
        async with as_orders(cluster, address) as channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.ListProducts(
                    inventory_pb2.ListProductsRequest(page_token="garbage"), timeout=20
                )
            missing = common_pb2.OrderItem(sku=f"NO-SUCH-{uuid.uuid4().hex[:8]}", quantity=1)
            with pytest.raises(grpc.aio.AioRpcError) as not_found:
                await stub.Reserve(
                    inventory_pb2.ReserveRequest(reservation_id=uuid.uuid4().hex, items=[missing]),
                    timeout=20,
                )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (invalid.value.details() or "")
    assert status_details(invalid.value).details, "BadRequest details must pass through"
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND, not_found.value.details()
    status_details(not_found.value)


@dataclass
class SteadyLoad:
    """A few closed-loop callers on one channel; records when each call started."""

    stub: inventory_pb2_grpc.InventoryStub
    workers: int = 4
    pause_s: float = 0.01
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
                pod = await list_products(self.stub)
            except grpc.aio.AioRpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
            else:
                self.calls.append((started, pod))
            self._progress.set()
            await asyncio.sleep(self.pause_s)

    def pods_since(self, since: float) -> Counter[str]:
        return Counter(pod for started, pod in self.calls if started > since)

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        async def check() -> None:
            while not condition():
                assert not self.failures, self.failures[:5]
                self._progress.clear()
                await self._progress.wait()

        await asyncio.wait_for(check(), timeout_s)

    def stop(self) -> None:
        self._stop.set()


async def test_l7_sidecar_follows_endpoint_changes_without_failing_calls(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    address = listen_addr()
    first = endpoints(cluster, range(3))
    async with (
        HAProxy("sidecar", tmp_path, "http", {"inventory": address}) as proxy,
        as_orders(cluster, address) as channel,
    ):
        await proxy.publish("inventory", first)
        load = SteadyLoad(inventory_pb2_grpc.InventoryStub(channel))
        running = asyncio.create_task(load.run())
        loop = asyncio.get_running_loop()
        try:
            await load.wait_until(lambda: len(load.calls) >= 50, 30)

            # Scale-up: a 4th pod gets calls as soon as it is published.
            replica = await asyncio.to_thread(cluster.start_replica, "inventory", 3)
            await asyncio.to_thread(cluster.wait_ready, 60.0, None, replica)
            added = endpoints(cluster, [3])
            assert [e.pod for e in added] == ["inventory-3"]
            await proxy.publish("inventory", first + added)
            published = loop.time()
            await load.wait_until(lambda: load.pods_since(published)["inventory-3"] >= 20, 30)

            # Scale-down: calls started after publish() returned never reach the pod.
            await proxy.publish("inventory", first[1:] + added)
            removed = loop.time()
            await load.wait_until(lambda: sum(load.pods_since(removed).values()) >= 200, 30)
        finally:
            load.stop()
            await running
    assert load.failures == [], load.failures[:5]
    after = load.pods_since(removed)
    assert "inventory-0" not in after, after
    assert set(after) == {"inventory-1", "inventory-2", "inventory-3"}, after


async def test_start_failure_and_overflow_are_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        proxy = HAProxy("clash", tmp_path, "http", {"inventory": busy})
        with pytest.raises(HAProxyError, match="exited with code"):
            await proxy.start(timeout_s=30)
    assert proxy.pid is None
    await proxy.close()  # harmless after a failed start

    proxy = HAProxy("small", tmp_path, "tcp", {"inventory": listen_addr()}, max_backends=2)
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
