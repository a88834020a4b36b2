"""The gRPC health protocol on every replica, and what SIGTERM does to it.

On SIGTERM a replica must first say NOT_SERVING (to Watch streams at once, to
Check for the whole drain delay) while it keeps its port open, and only then stop
and exit 0: that window is what lets clients and endpoint lists move away.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.local.cluster import LocalCluster, Replica

from ..support.clusters import ClusterFactory
from ..support.waiting import wait_until_async

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAMES = {
    "gateway": "shop.v1.Gateway",
    "orders": "shop.v1.Orders",
    "inventory": "shop.v1.Inventory",
}
DRAIN_DELAY_S = 3.0


def _check(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(response.status)


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    return module_cluster_factory(gateway=1, orders=1, inventory=1)


@pytest.mark.parametrize("service", list(SERVICE_NAMES))
def test_check_serving_for_server_and_service(cluster: LocalCluster, service: str) -> None:
    address = cluster.replicas_of(service)[0].grpc_addr
    assert _check(address, "") == SERVING
    assert _check(address, SERVICE_NAMES[service]) == SERVING


@pytest.mark.parametrize("service", list(SERVICE_NAMES))
def test_check_unknown_service_is_not_found(cluster: LocalCluster, service: str) -> None:
    address = cluster.replicas_of(service)[0].grpc_addr
    other = next(name for key, name in SERVICE_NAMES.items() if key != service)
    with pytest.raises(grpc.RpcError) as caught:
        _check(address, other)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def _next_status(stream: grpc.aio.UnaryStreamCall, timeout_s: float) -> int:
    response = await asyncio.wait_for(stream.read(), timeout_s)
    assert response is not grpc.aio.EOF, "Watch stream ended"
    return int(response.status)


def _log_events(replica: Replica) -> list[dict[str, object]]:
    events = []
    for line in replica.log_path.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def test_sigterm_drains_then_exits_zero(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(gateway=1, orders=2, inventory=1, drain_delay_s=DRAIN_DELAY_S)
    victim = cluster.replicas_of("orders")[1]
    service = SERVICE_NAMES["orders"]
    async with grpc.aio.insecure_channel(victim.grpc_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch_service = stub.Watch(health_pb2.HealthCheckRequest(service=service))
        watch_server = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert await _next_status(watch_service, 10) == SERVING
        assert await _next_status(watch_server, 10) == SERVING

        signalled = time.monotonic()
        cluster.signal_replica(victim, signal.SIGTERM)
        # Watch streams hear about it at once, long before the drain delay is over.
        assert await _next_status(watch_service, DRAIN_DELAY_S) == NOT_SERVING
        assert await _next_status(watch_server, DRAIN_DELAY_S) == NOT_SERVING
        # The server still answers during the drain, and says it is going away.
        during = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        overall = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert time.monotonic() - signalled < DRAIN_DELAY_S, "checked too late to prove a drain"
        assert during.status == NOT_SERVING
        assert overall.status == NOT_SERVING
        assert victim.alive()
        # Done watching (streams left open are covered by the test after this one).
        watch_service.cancel()
        watch_server.cancel()

        code = await asyncio.to_thread(cluster.wait_exit, victim, 30)
        stopped_after = time.monotonic() - signalled
        assert code == 0, victim.log_tail()
        # It waited out its drain delay before stopping.
        assert stopped_after >= DRAIN_DELAY_S

    # The rest of the shop is untouched.
    survivor = cluster.replicas_of("orders")[0]
    assert _check(survivor.grpc_addr, service) == SERVING
    lifecycle = [
        event["msg"]
        for event in _log_events(victim)
        if event["msg"] in {"serving", "draining", "server stopped", "stopped"}
    ]
    assert lifecycle == ["serving", "draining", "server stopped", "stopped"]
    draining = next(e for e in _log_events(victim) if e["msg"] == "draining")
    assert draining["signal"] == "SIGTERM"
    assert draining["drain_delay_s"] == DRAIN_DELAY_S


async def _statuses_until_end(stream: grpc.aio.UnaryStreamCall, timeout_s: float) -> list[int]:
    """Every status the stream sends until it ends (raises if it ends with an error)."""

    async def read_all() -> list[int]:
        statuses = []
        while (response := await stream.read()) is not grpc.aio.EOF:
            statuses.append(int(response.status))
        return statuses

    try:
        return await asyncio.wait_for(read_all(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"Watch stream still open after {timeout_s}s") from None


async def test_sigterm_ends_open_watch_streams_after_the_drain(
    cluster_factory: ClusterFactory,
) -> None:
    """Watch streams left open (as peers' health checks leave them) must not hold the
    graceful stop for its whole grace: they end with OK once the drain delay is over."""
    drain_delay_s, grace_s = 2.0, 60.0
    cluster = cluster_factory(
        gateway=1, orders=2, inventory=1, drain_delay_s=drain_delay_s, shutdown_grace_s=grace_s
    )
    victim = cluster.replicas_of("orders")[1]
    async with grpc.aio.insecure_channel(victim.grpc_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = [
            stub.Watch(health_pb2.HealthCheckRequest(service=name))
            for name in (SERVICE_NAMES["orders"], "")
        ]
        for watch in watches:
            assert await _next_status(watch, 10) == SERVING

        signalled = time.monotonic()
        cluster.signal_replica(victim, signal.SIGTERM)
        # Never cancelled here: the replica itself ends them, after NOT_SERVING.
        for watch in watches:
            assert await _statuses_until_end(watch, grace_s / 2) == [NOT_SERVING]
            assert await watch.code() == grpc.StatusCode.OK
        assert time.monotonic() - signalled >= drain_delay_s, "ended before the drain was over"

        code = await asyncio.to_thread(cluster.wait_exit, victim, grace_s / 2)
        assert code == 0, victim.log_tail()

    stopped = next(e for e in _log_events(victim) if e["msg"] == "server stopped")
    assert isinstance(stopped["shutdown_s"], float)
    assert stopped["shutdown_s"] < grace_s / 2, "the stop waited on the open Watch streams"
    survivor = cluster.replicas_of("orders")[0]
    assert _check(survivor.grpc_addr, SERVICE_NAMES["orders"]) == SERVING


async def test_second_sigterm_exits_without_draining(cluster_factory: ClusterFactory) -> None:
    """For the operator who does not want to wait out the drain delay."""
    cluster = cluster_factory(
        gateway=1, orders=1, inventory=1, service_env={"gateway": {"SHOP_DRAIN_DELAY_S": "60"}}
    )
    victim = cluster.replicas_of("gateway")[0]
    cluster.signal_replica(victim, signal.SIGTERM)
    await wait_until_async(
        lambda: _check(victim.grpc_addr, "") == NOT_SERVING,
        "the first SIGTERM to start the drain",
        15,
    )
    cluster.signal_replica(victim, signal.SIGTERM)
    code = await asyncio.to_thread(cluster.wait_exit, victim, 15)
    assert code == 128 + signal.SIGTERM
