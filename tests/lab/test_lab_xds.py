"""The lab's xDS control plane with real proxyless gRPC clients.

Each client is a process of its own with ``GRPC_XDS_BOOTSTRAP`` in its environment,
as in a pod: gRPC reads the bootstrap when a process creates its first ``xds:///``
channel, so setting it in this test process would depend on test order. The probe
clients (``xds_probe.py``) and the shop's own orders replicas open their own ADS
streams; this test process only talks ADS directly in the protocol test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from shop.lab import xds_resources as res
from shop.lab.endpoints import Endpoint, ReadinessTracker, service_host
from shop.lab.xds import XdsControlPlane
from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import LocalCluster
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from ..support.auth import channel_with
from ..support.clusters import ClusterFactory

PROBE = Path(__file__).with_name("xds_probe.py")
PORT = AddressPlan().grpc_port
WAIT_S = 60.0  # for any condition: a shared 2-core machine can be slow, never wrong


@pytest.fixture
async def plane() -> AsyncIterator[XdsControlPlane]:
    control_plane = XdsControlPlane()
    await control_plane.start()
    try:
        yield control_plane
    finally:
        await control_plane.close()


@pytest.fixture
def probe_env(plane: XdsControlPlane, tmp_path: Path) -> dict[str, str]:
    bootstrap = plane.write_bootstrap(tmp_path / "xds-bootstrap.json", node_id="probe")
    return {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "GRPC_VERBOSITY": "ERROR"}


def endpoints_of(plan: AddressPlan, service: str, indexes: Sequence[int]) -> list[Endpoint]:
    return [Endpoint(f"{service}-{i}", plan.ip(service, i), plan.grpc_port) for i in indexes]


async def start_cluster(factory: ClusterFactory, **kwargs: Any) -> LocalCluster:
    # Off the event loop: the control plane must keep answering while replicas start.
    return await asyncio.to_thread(factory, **kwargs)


def as_gateway(cluster: LocalCluster) -> dict[str, str]:
    """A probe's environment addition to call ``cluster`` with the gateway's caller
    token, signed with the key the gateway's pod would have."""
    return {"SHOP_INTERNAL_KEYS_DIR": str(cluster.credentials.internal_keys_dir)}


# --- probes: xDS clients in their own processes ------------------------------------------


async def count_calls(target: str, env: dict[str, str], calls: int) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), target, "count", str(calls), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), WAIT_S)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


class StreamProbe:
    """Calls inventory until stopped; ``calls`` holds (monotonic time, pod or ERROR:code)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.calls: list[tuple[float, str]] = []
        self._line = asyncio.Event()
        self._pump = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            when, _, outcome = line.decode().strip().partition(" ")
            if outcome:
                self.calls.append((float(when), outcome))
            self._line.set()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._pump.done():
                raise AssertionError(f"not {what} after {WAIT_S}s: {self.calls[-10:]}")
            self._line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._line.wait(), remaining)

    def since(self, start: float) -> list[str]:
        return [outcome for when, outcome in self.calls if when >= start]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self._pump, WAIT_S)
        await asyncio.wait_for(self.process.wait(), WAIT_S)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await asyncio.gather(self._pump, return_exceptions=True)


@pytest.fixture
async def stream_probe(probe_env: dict[str, str]) -> AsyncIterator[Callable[..., Any]]:
    started: list[StreamProbe] = []

    async def start(target: str, log_path: Path, extra_env: dict[str, str]) -> StreamProbe:
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(PROBE), target, "stream", env={**probe_env, **extra_env},
                stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        started.append(StreamProbe(process))
        return started[-1]

    try:
        yield start
    finally:
        for probe in started:
            await probe.kill()


# --- tests --------------------------------------------------------------------------------


async def test_xds_clients_balance_calls_over_every_published_replica(
    cluster_factory: ClusterFactory, plane: XdsControlPlane, probe_env: dict[str, str]
) -> None:
    cluster = await start_cluster(cluster_factory, gateway=0, orders=0, inventory=3)
    await plane.publish("inventory", endpoints_of(cluster.spec.plan, "inventory", range(3)))
    target = plane.target("inventory", PORT)
    assert target == "xds:///inventory.shop.svc.cluster.local:50051"

    # Two clients at once, each with its own ADS stream (like two pods).
    env = {**probe_env, **as_gateway(cluster)}
    results = await asyncio.gather(*(count_calls(target, env, 90) for _ in range(2)))

    for result in results:
        print(f"per-pod calls through xDS: {result}")
        assert result["failed"] == {}
        assert sorted(result["pods"]) == ["inventory-0", "inventory-1", "inventory-2"]
        assert min(result["pods"].values()) >= 15, result  # fair share is 30
    assert plane.pushes >= 6  # listener, cluster and endpoints for each client


async def test_endpoint_push_moves_traffic_to_a_new_replica_and_away_again(
    cluster_factory: ClusterFactory,
    plane: XdsControlPlane,
    stream_probe: Callable[..., Any],
    tmp_path: Path,
) -> None:
    cluster = await start_cluster(cluster_factory, gateway=0, orders=0, inventory=2)
    await plane.publish("inventory", endpoints_of(cluster.spec.plan, "inventory", range(2)))
    probe: StreamProbe = await stream_probe(
        plane.target("inventory", PORT), tmp_path / "p.log", as_gateway(cluster)
    )
    await probe.wait_until(
        lambda: {"inventory-0", "inventory-1"} <= set(probe.since(0)), "calling both replicas"
    )

    # Scale up: the replica starts, becomes ready, and its endpoint is pushed.
    replica = await asyncio.to_thread(cluster.start_replica, "inventory", 2)
    await asyncio.to_thread(cluster.wait_ready, WAIT_S, None, replica)
    pushed = time.monotonic()
    await plane.publish("inventory", endpoints_of(cluster.spec.plan, "inventory", range(3)))
    await probe.wait_until(lambda: "inventory-2" in probe.since(pushed), "calling inventory-2")
    first = next(when for when, pod in probe.calls if when >= pushed and pod == "inventory-2")
    print(f"push -> first call on the new replica: {first - pushed:.3f} s")
    await probe.wait_until(lambda: probe.since(pushed).count("inventory-2") >= 10, "sharing")

    # Scale down: without its endpoint, inventory-2 gets no more calls.
    removed = time.monotonic()
    await plane.publish("inventory", endpoints_of(cluster.spec.plan, "inventory", range(2)))

    def calls_since_last_on_removed() -> int:
        calls = probe.since(removed)
        last = max((i for i, pod in enumerate(calls) if pod == "inventory-2"), default=-1)
        return len(calls) - 1 - last

    await probe.wait_until(lambda: calls_since_last_on_removed() >= 60, "off inventory-2")
    late = probe.since(removed).count("inventory-2")
    print(f"calls on inventory-2 after its removal was pushed: {late}")
    assert late <= 2  # at most what was already in flight when the push landed
    await probe.stop()
    errors = Counter(pod for _, pod in probe.calls if pod.startswith("ERROR"))
    assert errors == Counter(), errors
    print(f"{len(probe.calls)} calls, 0 failed; pushes sent: {plane.pushes}")


async def test_orders_replicas_reach_inventory_through_xds(
    cluster_factory: ClusterFactory, plane: XdsControlPlane, tmp_path: Path
) -> None:
    plan = AddressPlan(net=free_net())
    bootstrap = plane.write_bootstrap(tmp_path / "orders-bootstrap.json", node_id="orders")
    xds_env = {
        "SHOP_INVENTORY_TARGET": plane.target("inventory", plan.grpc_port),
        "GRPC_XDS_BOOTSTRAP": str(bootstrap),
    }
    # Readiness drives the endpoints, as EndpointSlices drive istiod.
    tracker = ReadinessTracker([plane])
    for endpoint in endpoints_of(plan, "inventory", range(3)):
        tracker.watch("inventory", endpoint)
    try:
        cluster = await start_cluster(
            cluster_factory, gateway=1, orders=2, inventory=3, plan=plan,
            service_env={"orders": xds_env},
        )  # fmt: skip
        await tracker.wait_for("inventory", lambda ready: len(ready) == 3, WAIT_S)
        routes = await place_orders(cluster, 30)
    finally:
        await tracker.close()

    pairs = Counter((route["orders"], route["inventory"]) for route in routes)
    print(f"(orders pod, inventory pod) -> orders placed: {dict(sorted(pairs.items()))}")
    inventory_pods = Counter(route["inventory"] for route in routes)
    assert sorted(inventory_pods) == ["inventory-0", "inventory-1", "inventory-2"]
    # Each orders replica is an xDS client of its own and spreads its Reserves itself.
    for orders_pod in ("orders-0", "orders-1"):
        reached = {inv for (orders, inv), _ in pairs.items() if orders == orders_pod}
        assert len(reached) == 3, pairs


async def place_orders(cluster: LocalCluster, orders: int) -> list[dict[str, str]]:
    """Places ``orders`` orders one by one through the gateway; the route of each."""
    routes = []
    async with channel_with(
        cluster.gateway_target, cluster.end_user_metadata("xds-lab")
    ) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        for _ in range(orders):
            call = gateway.PlaceOrder(
                gateway_pb2.PlaceOrderRequest(
                    items=[common_pb2.OrderItem(sku="MUG-003", quantity=1)],
                    idempotency_key=uuid.uuid4().hex,
                ),
                timeout=WAIT_S,
            )
            order = await call
            assert order.status == common_pb2.ORDER_STATUS_CONFIRMED
            routes.append(parse_route(dict(await call.trailing_metadata())[ROUTE_TRAILER]))
    return routes


async def test_ads_protocol_acks_nacks_wildcards_and_pushes_to_every_stream(
    plane: XdsControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    inventory = [Endpoint("inventory-0", "127.0.0.1", 50051)]
    await plane.publish("inventory", inventory)
    host = service_host("inventory")
    cluster = res.cluster_name(host, PORT)
    async with grpc.aio.insecure_channel(plane.address) as channel:
        ads = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        first, second = ads.StreamAggregatedResources(), ads.StreamAggregatedResources()
        node = {"node": {"id": "raw-client"}}

        # Named listener (and an unknown one, which is simply absent).
        names = [res.listener_name(host, PORT), "nope.shop.svc.cluster.local:1"]
        lds = await exchange(first, res.LISTENER, names, **node)
        [listener] = unpack(lds, listener_pb2.Listener)
        assert listener.name == f"{host}:{PORT}"
        # Wildcard clusters: an empty first request asks for all of them.
        cds = await exchange(first, res.CLUSTER, [])
        assert [c.name for c in unpack(cds, cluster_pb2.Cluster)] == [cluster]
        # Endpoints on both streams.
        eds = await exchange(first, res.ENDPOINTS, [cluster])
        eds2 = await exchange(second, res.ENDPOINTS, [cluster], **node)
        for response in (eds, eds2):
            [assignment] = unpack(response, endpoint_pb2.ClusterLoadAssignment)
            [locality] = assignment.endpoints
            assert [e.endpoint.hostname for e in locality.lb_endpoints] == ["inventory-0"]
            assert {e.health_status for e in locality.lb_endpoints} == {1}  # HEALTHY

        # ACK everything; a NACK is logged and not answered; a stale nonce is ignored.
        await ack(first, lds, names)
        await ack(first, cds, [])
        await ack(second, eds2, [cluster])
        with caplog.at_level(logging.WARNING, logger="shop.lab.xds"):
            await ack(first, eds, [cluster], error="bad endpoints")
            await ack(first, eds, [cluster, "outbound|1||more"], nonce="0")  # stale
            await wait_for(lambda: "bad endpoints" in caplog.text)
        assert "xDS NACK from raw-client" in caplog.text

        # A publish reaches both streams at once, and only as endpoints: the listener
        # and cluster did not change, so nothing else comes first.
        await plane.publish("inventory", [*inventory, Endpoint("inventory-1", "127.0.0.2", 50051)])
        for stream in (first, second):
            push = await asyncio.wait_for(stream.read(), WAIT_S)
            assert push.type_url == res.ENDPOINTS
            [assignment] = unpack(push, endpoint_pb2.ClusterLoadAssignment)
            assert len(assignment.endpoints[0].lb_endpoints) == 2
            await ack(stream, push, [cluster])
        # A new service, even with no ready endpoint yet, shows up for the wildcard
        # cluster subscriber only (wildcards list the ports that target() handed out
        # or that endpoints listen on).
        plane.target("orders", PORT)
        await plane.publish("orders", [])
        push = await asyncio.wait_for(first.read(), WAIT_S)
        assert push.type_url == res.CLUSTER
        assert len(push.resources) == 2
        first.cancel()
        second.cancel()


async def exchange(stream: Any, type_url: str, names: list[str], **fields: Any) -> Any:
    request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names, **fields)
    await stream.write(request)
    response = await asyncio.wait_for(stream.read(), WAIT_S)
    assert response.type_url == type_url
    return response


async def ack(
    stream: Any, response: Any, names: list[str], error: str = "", nonce: str | None = None
) -> None:
    """ACKs ``response`` (NACKs it with ``error``), subscribing to ``names``."""
    request = discovery_pb2.DiscoveryRequest(
        type_url=response.type_url,
        resource_names=names,
        version_info=response.version_info,
        response_nonce=response.nonce if nonce is None else nonce,
    )
    if error:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    await stream.write(request)


def unpack(response: Any, message_type: Any) -> list[Any]:
    found = []
    for packed in response.resources:
        message = message_type()
        assert packed.Unpack(message)
        found.append(message)
    return found


async def wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_xds_route_retries_unavailable_calls(
    plane: XdsControlPlane, probe_env: dict[str, str]
) -> None:
    """An ``xds:///`` channel ignores the service config given as a channel option, so the
    runtime's retry policy must come from the route: 4 attempts, as SHOP_RETRY_MAX_ATTEMPTS."""
    attempts = 0

    async def unavailable(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal attempts
        attempts += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        raise AssertionError("abort returned")

    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler(unavailable)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("shop.v1.Inventory", {"ListProducts": method}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        # The endpoint's port differs from the service port, as a targetPort may.
        await plane.publish("inventory", [Endpoint("inventory-0", "127.0.0.1", port)])
        result = await count_calls(plane.target("inventory", PORT), probe_env, 1)
    finally:
        await server.stop(None)
    assert result == {"pods": {}, "failed": {"UNAVAILABLE": 1}}
    assert attempts == res.RETRY_ATTEMPTS == 4


async def test_grpc_python_nacks_a_least_request_cluster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """gRPC's C core (Python, C++) has no least_request policy, unlike Java and Go: it
    rejects the cluster, and the control plane logs the client's reason."""
    least_request = XdsControlPlane(lb_policy="LEAST_REQUEST")
    await least_request.start()
    try:
        await least_request.publish("inventory", [Endpoint("inventory-0", "127.0.0.1", 1)])
        bootstrap = least_request.write_bootstrap(tmp_path / "lr-bootstrap.json")
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "GRPC_VERBOSITY": "NONE"}
        with caplog.at_level(logging.WARNING, logger="shop.lab.xds"):
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(PROBE), least_request.target("inventory", PORT), "count", "1",
                env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                await wait_for(lambda: "LB policy is not supported" in caplog.text)
            finally:
                process.kill()
                await process.wait()
        assert "xDS NACK from shop-lab" in caplog.text
        assert "for Cluster" in caplog.text
    finally:
        await least_request.close()
