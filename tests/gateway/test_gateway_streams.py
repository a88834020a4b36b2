"""WatchOrder at the gateway: capped per end user and per replica, and ended cleanly
after a maximum lifetime or when a gateway or orders replica drains, through the real
gateway -> orders -> inventory setups configured by environment as in a pod."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from shop.credentials import LocalCredentials
from shop.gateway.app import setup as gateway_setup
from shop.inventory.app import setup as inventory_setup
from shop.local.addresses import free_port
from shop.orders.app import setup as orders_setup
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from ..support.auth import channel_with, user_metadata
from ..support.servers import InProcessServer, StartServer
from ..support.waiting import wait_until_async

CONFIRMED = common_pb2.ORDER_STATUS_CONFIRMED
CANCELLED = common_pb2.ORDER_STATUS_CANCELLED

# customer -> a gateway stub calling with that customer's token
Gateways = Callable[[str], Awaitable[gateway_pb2_grpc.GatewayStub]]
StartChain = Callable[..., Awaitable[Gateways]]


@pytest.fixture
async def start_chain(
    monkeypatch: pytest.MonkeyPatch, start_server: StartServer, credentials: LocalCredentials
) -> AsyncIterator[StartChain]:
    """``await start_chain(**{"SHOP_...": "..."})`` starts the three services with these
    settings and returns ``gateway(customer)``."""
    async with AsyncExitStack() as stack:

        async def start(**env: str) -> Gateways:
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            addresses = {name: f"127.0.0.1:{free_port()}" for name in ("inventory", "orders")}
            monkeypatch.setenv("SHOP_INVENTORY_TARGET", addresses["inventory"])
            monkeypatch.setenv("SHOP_ORDERS_TARGET", addresses["orders"])
            for name, setup in (("inventory", inventory_setup), ("orders", orders_setup)):
                await start_server(name, setup, listen_addr=addresses[name], pod_name=f"{name}-s0")
            gateway = await start_server("gateway", gateway_setup, pod_name="gateway-s0")

            async def for_customer(customer: str) -> gateway_pb2_grpc.GatewayStub:
                channel = await stack.enter_async_context(
                    channel_with(gateway.address, user_metadata(credentials, customer))
                )
                return gateway_pb2_grpc.GatewayStub(channel)

            return for_customer

        yield start


async def place(gateway: gateway_pb2_grpc.GatewayStub) -> common_pb2.Order:
    order: common_pb2.Order = await gateway.PlaceOrder(
        gateway_pb2.PlaceOrderRequest(items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)]),
        timeout=30,
    )
    assert order.status == CONFIRMED
    return order


def watch(gateway: gateway_pb2_grpc.GatewayStub, order: common_pb2.Order, **kwargs: Any) -> Any:
    return gateway.WatchOrder(gateway_pb2.WatchOrderRequest(order_id=order.order_id), **kwargs)


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    status = rpc_status.from_call(error)  # also checks code and message agree
    assert status is not None
    failure = error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(failure)
    return error


async def test_caps_per_end_user_and_per_replica_name_their_limit(start_chain: StartChain) -> None:
    gateway = await start_chain(SHOP_STREAMS_MAX_PER_CALLER="2", SHOP_STREAMS_MAX_PER_REPLICA="3")
    alice, bob, carol = [await gateway(name) for name in ("alice", "bob", "carol")]
    orders = {stub: await place(stub) for stub in (alice, bob, carol)}

    held = [watch(alice, orders[alice], timeout=60) for _ in range(2)]
    await asyncio.gather(*(call.read() for call in held))
    error = await refusal(watch(alice, orders[alice], timeout=60))
    assert "SHOP_STREAMS_MAX_PER_CALLER=2" in (error.details() or "")
    assert "'alice'" in (error.details() or "")

    # Another end user is not held back by alice's cap, only by the replica's.
    held.append(watch(bob, orders[bob], timeout=60))
    assert (await held[-1].read()).order.status == CONFIRMED
    error = await refusal(watch(carol, orders[carol], timeout=60))
    assert "SHOP_STREAMS_MAX_PER_REPLICA=3" in (error.details() or "")

    # Ending a stream frees its slot for the next caller.
    held[0].cancel()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        retry = watch(carol, orders[carol], timeout=60)
        try:
            assert (await retry.read()).order.status == CONFIRMED
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert loop.time() < deadline, "the cancelled stream's slot was never freed"
            await asyncio.sleep(0.05)
    for call in (*held, retry):
        call.cancel()


async def test_a_stream_without_deadline_ends_ok_at_its_lifetime_and_resumes(
    start_chain: StartChain,
) -> None:
    # The default downstream deadline (for calls whose caller set none) is far shorter
    # than the stream's lifetime: the lifetime must be what ends the stream.
    gateway = await start_chain(SHOP_STREAM_MAX_LIFETIME_S="1.5", SHOP_DOWNSTREAM_TIMEOUT_S="0.3")
    customer = await gateway("dora")
    order = await place(customer)
    call = watch(customer, order)  # no deadline of its own
    assert (await call.read()).order.status == CONFIRMED
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK

    await customer.CancelOrder(gateway_pb2.CancelOrderRequest(order_id=order.order_id), timeout=30)
    again = watch(customer, order)
    statuses = []
    while (event := await again.read()) is not grpc.aio.EOF:
        statuses.append(event.order.status)
    assert statuses == [CANCELLED]
    assert await again.code() == grpc.StatusCode.OK


# --- the drain: streams end OK at its end, not cut by the stop's grace --------------

DRAIN_DELAY_S = 1.0
# Far longer than anything here should take: a stream still open when it runs out was
# going to be cut (CANCELLED/UNAVAILABLE) by server.stop, the failure being tested.
GRACE_S = 20.0
# How long after the drain delay every stream must have ended.
END_MARGIN_S = 2.0
STREAMS = 4


@dataclass
class DrainChain:
    """gateway -> orders -> inventory, the gateway and the orders replicas stopping
    with a drain delay. The gateway's orders target names two replicas on one
    database, as a headless Service would; the second starts only when asked."""

    gateway: InProcessServer
    orders: list[InProcessServer]
    customer: gateway_pb2_grpc.GatewayStub
    start_second_orders: Callable[[], Awaitable[InProcessServer]]


@pytest.fixture
async def drain_chain(
    monkeypatch: pytest.MonkeyPatch, start_server: StartServer, credentials: LocalCredentials
) -> AsyncIterator[DrainChain]:
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("inventory", "orders-0", "orders-1")}
    monkeypatch.setenv("SHOP_INVENTORY_TARGET", addresses["inventory"])
    monkeypatch.setenv(
        "SHOP_ORDERS_TARGET", f"ipv4:{addresses['orders-0']},{addresses['orders-1']}"
    )
    drain = {"drain_delay_s": DRAIN_DELAY_S, "shutdown_grace_s": GRACE_S}
    await start_server(
        "inventory", inventory_setup, listen_addr=addresses["inventory"], pod_name="inventory-d0"
    )
    orders = [
        await start_server(
            "orders", orders_setup, listen_addr=addresses["orders-0"], pod_name="orders-0", **drain
        )
    ]
    gateway = await start_server("gateway", gateway_setup, pod_name="gateway-d0", **drain)

    async def start_second_orders() -> InProcessServer:
        # The same SHOP_DATA_DIR, so the same SQLite database as orders-0.
        orders.append(
            await start_server(
                "orders",
                orders_setup,
                listen_addr=addresses["orders-1"],
                pod_name="orders-1",
                **drain,
            )
        )
        return orders[-1]

    async with channel_with(gateway.address, user_metadata(credentials, "erin")) as channel:
        yield DrainChain(
            gateway, orders, gateway_pb2_grpc.GatewayStub(channel), start_second_orders
        )


async def _serving_health_watch(channel: grpc.aio.Channel, service: str) -> Any:
    call = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=service), timeout=60
    )
    assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
    return call


async def _end_of(call: Any, signalled: float) -> tuple[list[Any], float]:
    """Everything ``call`` sends until it ends, and when it ended (seconds after
    ``signalled``); fails unless it ends with OK by the drain delay plus the margin."""
    loop = asyncio.get_running_loop()
    received = []
    try:
        async with asyncio.timeout_at(signalled + DRAIN_DELAY_S + END_MARGIN_S):
            while (message := await call.read()) is not grpc.aio.EOF:
                received.append(message)
    except TimeoutError:
        raise AssertionError(
            f"stream still open {DRAIN_DELAY_S + END_MARGIN_S}s after the shutdown signal"
        ) from None
    except grpc.aio.AioRpcError as error:
        raise AssertionError(f"stream ended {error.code().name}: {error.details()}") from None
    assert await call.code() == grpc.StatusCode.OK
    return received, loop.time() - signalled


async def rest(call: Any) -> list[Any]:
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


async def _orders_pod_serving(customer: gateway_pb2_grpc.GatewayStub, order_id: str) -> str:
    call = customer.GetOrder(gateway_pb2.GetOrderRequest(order_id=order_id), timeout=10)
    await call
    trailers = dict(await call.trailing_metadata() or ())
    return parse_route(str(trailers.get(ROUTE_TRAILER, ""))).get("orders", "")


async def test_an_orders_replica_draining_ends_streams_ok_and_a_resubscribe_starts_current(
    drain_chain: DrainChain,
) -> None:
    chain = drain_chain
    loop = asyncio.get_running_loop()
    order = await place(chain.customer)
    streams = [watch(chain.customer, order, timeout=120) for _ in range(STREAMS)]
    for stream in streams:
        assert (await stream.read()).order.status == CONFIRMED
    # Started only now, so every stream above goes through orders-0; the gateway must
    # reach orders-1 before orders-0 leaves, as in a rollout.
    await chain.start_second_orders()

    async def reaches_orders_1() -> bool:
        return await _orders_pod_serving(chain.customer, order.order_id) == "orders-1"

    await wait_until_async(reaches_orders_1, "the gateway to call orders-1", 20)
    async with grpc.aio.insecure_channel(chain.orders[0].address) as channel:
        health = await _serving_health_watch(channel, "shop.v1.Orders")
        signalled = loop.time()
        chain.orders[0].shutdown.trigger("test: orders-0 drains")
        for stream in streams:
            received, ended_after = await _end_of(stream, signalled)
            assert received == []
            # Open through the drain delay (the replica still serves them), ended at its end.
            assert ended_after >= DRAIN_DELAY_S
        # Health Watch streams end as before: NOT_SERVING at once, OK after the delay.
        statuses, ended_after = await _end_of(health, signalled)
        assert [s.status for s in statuses] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert ended_after >= DRAIN_DELAY_S

    # Nothing was left for the stop to wait on.
    await asyncio.wait_for(asyncio.shield(chain.orders[0].task), END_MARGIN_S)

    # A change while no stream is open, then a resubscribe, necessarily to orders-1 now:
    # it starts from the current state.
    await chain.customer.CancelOrder(
        gateway_pb2.CancelOrderRequest(order_id=order.order_id), timeout=30
    )
    again = watch(chain.customer, order, timeout=60)
    assert [event.order.status for event in await rest(again)] == [CANCELLED]
    assert await again.code() == grpc.StatusCode.OK


async def test_a_gateway_draining_ends_its_streams_ok(drain_chain: DrainChain) -> None:
    chain = drain_chain
    loop = asyncio.get_running_loop()
    order = await place(chain.customer)
    streams = [watch(chain.customer, order, timeout=120) for _ in range(STREAMS)]
    for stream in streams:
        assert (await stream.read()).order.status == CONFIRMED
    async with grpc.aio.insecure_channel(chain.gateway.address) as channel:
        health = await _serving_health_watch(channel, "shop.v1.Gateway")
        signalled = loop.time()
        chain.gateway.shutdown.trigger("test: the gateway drains")
        for stream in streams:
            received, ended_after = await _end_of(stream, signalled)
            assert received == []
            assert ended_after >= DRAIN_DELAY_S
        statuses, ended_after = await _end_of(health, signalled)
        assert [s.status for s in statuses] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert ended_after >= DRAIN_DELAY_S
    # Nothing was left for the stop to wait on.
    await asyncio.wait_for(asyncio.shield(chain.gateway.task), END_MARGIN_S)
