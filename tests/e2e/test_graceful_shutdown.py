"""Stopping replicas under load loses no calls.

A closed loop of concurrent clients keeps the shop busy while one orders replica
and then one inventory replica get SIGTERM, as in a rolling update. Every call must
succeed: health goes NOT_SERVING first, the callers' round_robin (with client-side
health checks) moves away during the drain delay, in-flight calls finish inside the
grace period, and retries on UNAVAILABLE cover connection races.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from shop.local.cluster import LocalCluster, Replica
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, inventory_pb2

from ..support.clusters import ClusterFactory

WORKERS = 16
CALL_TIMEOUT_S = 30.0
TEST_BUDGET_S = 150.0
SUCCESSES_BETWEEN_STEPS = 60


@dataclass(frozen=True)
class Outcome:
    finished: float
    method: str
    code: grpc.StatusCode
    details: str
    route: dict[str, str]


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    waiting_for: str = "start-up"

    def summary(self) -> str:
        failed = Counter(
            (o.method, o.code.name, o.details)
            for o in self.outcomes
            if o.code != grpc.StatusCode.OK
        )
        return f"{len(self.outcomes)} calls, failures: {dict(failed)}"

    def successes_since(self, moment: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.code == grpc.StatusCode.OK and o.finished > moment]

    def served_by(self, replica: Replica) -> int:
        return sum(1 for o in self.outcomes if o.route.get(replica.service) == replica.pod)


async def _worker(
    stub: gateway_pb2_grpc.GatewayStub, load: Load, user: tuple[tuple[str, str], ...]
) -> None:
    """Calls as one customer (``user``: their bearer token) until the load stops."""
    calls = 0
    while not load.stop.is_set():
        calls += 1
        if calls % 2:
            method = "PlaceOrder"
            call = stub.PlaceOrder(
                gateway_pb2.PlaceOrderRequest(
                    items=[common_pb2.OrderItem(sku="PAP-008", quantity=1)],
                    idempotency_key=str(uuid.uuid4()),
                ),
                metadata=user,
                timeout=CALL_TIMEOUT_S,
            )
        else:
            method = "ListProducts"
            call = stub.ListProducts(
                inventory_pb2.ListProductsRequest(page_size=5),
                metadata=user,
                timeout=CALL_TIMEOUT_S,
            )
        try:
            await call
            code, details = grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
        trailers = dict(await call.trailing_metadata() or ())
        load.outcomes.append(
            Outcome(
                time.monotonic(),
                method,
                code,
                details,
                parse_route(trailers.get(ROUTE_TRAILER, "")),
            )
        )


async def _wait_for(load: Load, condition: str, check: Callable[[], bool]) -> None:
    load.waiting_for = condition
    while not check():
        if load.stop.is_set():
            raise AssertionError(f"load stopped while waiting for {condition}")
        await asyncio.sleep(0.05)


async def _stop_replica(cluster: LocalCluster, load: Load, replica: Replica) -> float:
    """SIGTERM ``replica`` and wait for its exit; returns when it exited."""
    await _wait_for(
        load, f"{replica.pod} to serve calls first", lambda: load.served_by(replica) >= 5
    )
    cluster.signal_replica(replica, signal.SIGTERM)
    load.waiting_for = f"{replica.pod} to exit"
    code = await asyncio.to_thread(cluster.wait_exit, replica, 60)
    exited = time.monotonic()
    assert code == 0, f"{replica.pod} exited with {code}:\n{replica.log_tail()}"
    return exited


async def test_sigterm_under_load_fails_no_call(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(gateway=1, orders=3, inventory=3)
    load = Load()
    async with grpc.aio.insecure_channel(cluster.gateway_target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        workers = [
            asyncio.create_task(_worker(stub, load, cluster.end_user_metadata(f"load-{n}")))
            for n in range(WORKERS)
        ]
        stops: dict[str, float] = {}
        try:
            async with asyncio.timeout(TEST_BUDGET_S):
                started = time.monotonic()
                await _wait_for(
                    load,
                    "the load to run",
                    lambda: len(load.successes_since(started)) >= SUCCESSES_BETWEEN_STEPS,
                )
                for service in ("orders", "inventory"):
                    victim = cluster.replicas_of(service)[1]
                    exited = await _stop_replica(cluster, load, victim)
                    stops[victim.pod] = exited

                    def recovered(since: float = exited) -> bool:
                        return len(load.successes_since(since)) >= SUCCESSES_BETWEEN_STEPS

                    await _wait_for(load, f"calls to succeed after {victim.pod} stopped", recovered)
        except TimeoutError:
            raise AssertionError(
                f"no progress in {TEST_BUDGET_S}s waiting for {load.waiting_for}; {load.summary()}"
            ) from None
        finally:
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), CALL_TIMEOUT_S + 10)

    failures = [o for o in load.outcomes if o.code != grpc.StatusCode.OK]
    assert not failures, load.summary()
    assert len(stops) == 2
    for pod, exited in stops.items():
        service = pod.rsplit("-", 1)[0]
        # Nothing finished after the exit can have been served by the stopped pod.
        late = [o for o in load.outcomes if o.finished > exited and o.route.get(service) == pod]
        assert not late, f"{len(late)} calls served by {pod} after it exited"
        assert len(load.successes_since(exited)) >= SUCCESSES_BETWEEN_STEPS
    # Both hops kept balancing over the replicas that were left.
    last_stop = max(stops.values())
    after = load.successes_since(last_stop)
    assert {o.route["orders"] for o in after if o.method == "PlaceOrder"} == {
        "orders-0",
        "orders-2",
    }
    assert {o.route["inventory"] for o in after} == {"inventory-0", "inventory-2"}
