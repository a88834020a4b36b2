"""WatchOrder at the gateway: capped per end user and per replica, and ended cleanly
after a maximum lifetime, through the real gateway -> orders -> inventory setups
configured by environment as in a pod."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shop.gateway.app import setup as gateway_setup
from shop.inventory.app import setup as inventory_setup
from shop.local.credentials import LocalCredentials
from shop.orders.app import setup as orders_setup
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from ..conftest import StartServer, channel_with, free_port, user_metadata

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
