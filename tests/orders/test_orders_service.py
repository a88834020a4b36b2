"""Orders reads, cancels and watches over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shop.orders.store import CANCELLED
from shop.v1 import common_pb2, inventory_pb2, orders_pb2

CONFIRMED = common_pb2.ORDER_STATUS_CONFIRMED
CANCELLING = common_pb2.ORDER_STATUS_CANCELLING
CANCELLED_STATUS = common_pb2.ORDER_STATUS_CANCELLED


async def place(shop: Any, key: str, sku: str, quantity: int, customer: str = "cust-1") -> Any:
    return await shop.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            idempotency_key=key,
            customer_id=customer,
            items=[common_pb2.OrderItem(sku=sku, quantity=quantity)],
        ),
        timeout=30,
    )


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            return [v.field for v in request.field_violations]
    raise AssertionError("no BadRequest details")


async def test_concurrent_cancels_return_stock_exactly_once(shop: Any) -> None:
    await shop.set_stock("CXL-1", 10)
    order = await place(shop, "k-cancel", "CXL-1", 4)
    assert await shop.stock("CXL-1") == 6
    request = orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id)
    results = await asyncio.gather(
        shop.orders.CancelOrder(request, timeout=30), shop.orders.CancelOrder(request, timeout=30)
    )
    assert {r.status for r in results} == {CANCELLED_STATUS}
    assert {r.order_id for r in results} == {order.order_id}
    assert await shop.stock("CXL-1") == 10
    # Cancelling again is a no-op that reports the final state.
    again = await shop.orders.CancelOrder(request, timeout=30)
    assert again.status == CANCELLED_STATUS
    assert await shop.stock("CXL-1") == 10
    released = await shop.inventory.Release(
        inventory_pb2.ReleaseRequest(reservation_id=(await shop.record("k-cancel")).reservation_id),
        timeout=10,
    )
    assert released.released is False
    # The idempotency key still answers with the (now cancelled) order, taking nothing.
    replay = await place(shop, "k-cancel", "CXL-1", 4)
    assert (replay.order_id, replay.status) == (order.order_id, CANCELLED_STATUS)
    assert await shop.stock("CXL-1") == 10
    assert (await shop.record("k-cancel")).status == CANCELLED


async def test_many_concurrent_cancels_of_many_orders(shop: Any) -> None:
    await shop.set_stock("CXL-M", 30)
    orders = [await place(shop, f"k-m{n}", "CXL-M", 2) for n in range(5)]
    assert await shop.stock("CXL-M") == 20
    requests = [
        orders_pb2.OrderRef(order_id=o.order_id, customer_id=o.customer_id) for o in orders
    ] * 3
    results = await asyncio.gather(*(shop.orders.CancelOrder(r, timeout=30) for r in requests))
    assert {r.status for r in results} == {CANCELLED_STATUS}
    assert await shop.stock("CXL-M") == 30


async def test_get_and_cancel_reject_bad_or_unknown_ids(shop: Any) -> None:
    unknown = str(uuid.uuid4())
    for method in (shop.orders.GetOrder, shop.orders.CancelOrder):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(orders_pb2.OrderRef(order_id=unknown, customer_id="cust-1"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_details_pb2.ResourceInfo()
        status = rpc_status.from_call(caught.value)
        assert status is not None and status.details[0].Unpack(info)
        assert (info.resource_type, info.resource_name) == ("order", unknown)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await method(orders_pb2.OrderRef(order_id="order-42", customer_id="cust-1"), timeout=10)
        assert bad_fields(bad.value) == ["order_id"]


async def test_list_orders_pages_newest_first(shop: Any) -> None:
    await shop.set_stock("LST-1", 100)
    mine = [(await place(shop, f"k-l{n}", "LST-1", 1, customer="pager")).order_id for n in range(5)]
    await place(shop, "k-other", "LST-1", 1, customer="someone-else")
    # A rejected attempt is not an order and is never listed.
    with pytest.raises(grpc.aio.AioRpcError):
        await place(shop, "k-l-rejected", "LST-1", 1000, customer="pager")

    pages: list[list[str]] = []
    token = ""
    while True:
        reply = await shop.orders.ListOrders(
            orders_pb2.ListCustomerOrdersRequest(
                customer_id="pager", page_size=2, page_token=token
            ),
            timeout=10,
        )
        pages.append([o.order_id for o in reply.orders])
        assert {o.customer_id for o in reply.orders} <= {"pager"}
        token = reply.next_page_token
        if not token:
            break
        assert len(pages) < 10, "paging does not end"
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [oid for page in pages for oid in page] == mine[::-1]

    everything = await shop.orders.ListOrders(
        orders_pb2.ListCustomerOrdersRequest(customer_id="pager"), timeout=10
    )
    assert [o.order_id for o in everything.orders] == mine[::-1]
    assert everything.next_page_token == ""
    nobody = await shop.orders.ListOrders(
        orders_pb2.ListCustomerOrdersRequest(customer_id="nobody"), timeout=10
    )
    assert list(nobody.orders) == [] and nobody.next_page_token == ""


@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        ({"customer_id": "pager", "page_token": "garbage!"}, ["page_token"]),
        ({"customer_id": "pager", "page_token": "eyJza3UiOiJ4In0"}, ["page_token"]),
        ({"customer_id": "pager", "page_size": -1}, ["page_size"]),
        ({"customer_id": ""}, ["customer_id"]),
    ],
)
async def test_list_orders_rejects_bad_requests(
    shop: Any, request_args: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.ListOrders(
            orders_pb2.ListCustomerOrdersRequest(**request_args), timeout=10
        )
    assert bad_fields(caught.value) == fields


async def test_watch_streams_confirmed_then_cancelled(shop: Any) -> None:
    await shop.set_stock("WCH-1", 5)
    order = await place(shop, "k-watch", "WCH-1", 1)
    stream = shop.orders.WatchOrder(
        orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id), timeout=60
    )
    first = await stream.read()
    assert (first.order.order_id, first.order.status) == (order.order_id, CONFIRMED)
    cancelled = await shop.orders.CancelOrder(
        orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id), timeout=30
    )
    statuses = []
    while (event := await stream.read()) is not grpc.aio.EOF:  # ends at the final state
        statuses.append(event.order.status)
    assert statuses[-1] == CANCELLED_STATUS
    assert set(statuses[:-1]) <= {CANCELLING}
    assert await stream.code() == grpc.StatusCode.OK
    assert cancelled.status == CANCELLED_STATUS

    # Watching an order that is already final yields it once and ends.
    replay = [
        e.order.status
        async for e in shop.orders.WatchOrder(
            orders_pb2.OrderRef(order_id=order.order_id, customer_id=order.customer_id), timeout=30
        )
    ]
    assert replay == [CANCELLED_STATUS]


async def test_watch_of_unknown_or_malformed_order_fails_cleanly(shop: Any) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in shop.orders.WatchOrder(
            orders_pb2.OrderRef(order_id=unknown, customer_id="cust-1"), timeout=30
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        async for _ in shop.orders.WatchOrder(
            orders_pb2.OrderRef(order_id="nope", customer_id="cust-1"), timeout=30
        ):
            pass
    assert bad_fields(bad.value) == ["order_id"]
