"""The gateway in front of real orders and inventory servers: results and downstream
errors pass through with their codes and details, never as UNKNOWN."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import common_pb2, gateway_pb2, inventory_pb2

from ..support.auth import CUSTOMER
from ..support.catalog import stock_of
from ..support.status import detail_of

CONFIRMED = common_pb2.ORDER_STATUS_CONFIRMED
CANCELLING = common_pb2.ORDER_STATUS_CANCELLING
CANCELLED = common_pb2.ORDER_STATUS_CANCELLED


def order_request(sku: str, quantity: int, key: str = "") -> Any:
    # The customer is the bearer token's subject (the chain's CUSTOMER).
    return gateway_pb2.PlaceOrderRequest(
        items=[common_pb2.OrderItem(sku=sku, quantity=quantity)],
        idempotency_key=key,
    )


async def stock(chain: Any, sku: str) -> int:
    reply = await chain.inventory.ListProducts(
        inventory_pb2.ListProductsRequest(page_size=200), timeout=10
    )
    return stock_of(reply, sku)


async def set_stock(chain: Any, sku: str, level: int) -> None:
    await chain.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku=sku, stock=level, price_cents=300), timeout=10
    )


async def test_order_lifecycle_through_the_gateway(chain: Any) -> None:
    await set_stock(chain, "GW-1", 10)
    call = chain.gateway.PlaceOrder(order_request("GW-1", 3, key="gw-life"), timeout=30)
    order = await call
    assert (order.status, order.total_cents) == (CONFIRMED, 900)
    route = parse_route(dict(await call.trailing_metadata())[ROUTE_TRAILER])
    assert route == {"gateway": "gateway-t0", "orders": "orders-t0", "inventory": "inventory-t0"}
    assert await stock(chain, "GW-1") == 7

    assert order.customer_id == CUSTOMER
    got = await chain.gateway.GetOrder(
        gateway_pb2.GetOrderRequest(order_id=order.order_id), timeout=30
    )
    assert got == order
    listed = await chain.gateway.ListOrders(gateway_pb2.ListOrdersRequest(), timeout=30)
    assert [o.order_id for o in listed.orders] == [order.order_id]

    watch = chain.gateway.WatchOrder(
        gateway_pb2.WatchOrderRequest(order_id=order.order_id), timeout=60
    )
    first = await watch.read()
    assert first.order.status == CONFIRMED
    cancelled = await chain.gateway.CancelOrder(
        gateway_pb2.CancelOrderRequest(order_id=order.order_id), timeout=30
    )
    assert cancelled.status == CANCELLED
    statuses = []
    while (event := await watch.read()) is not grpc.aio.EOF:
        statuses.append(event.order.status)
    assert statuses[-1] == CANCELLED and set(statuses[:-1]) <= {CANCELLING}
    assert await stock(chain, "GW-1") == 10


async def test_orders_without_a_key_are_distinct_and_with_one_are_not(chain: Any) -> None:
    await set_stock(chain, "GW-K", 10)
    anonymous = await asyncio.gather(
        *(chain.gateway.PlaceOrder(order_request("GW-K", 1), timeout=30) for _ in range(3))
    )
    assert len({o.order_id for o in anonymous}) == 3
    keyed = await asyncio.gather(
        *(chain.gateway.PlaceOrder(order_request("GW-K", 1, key="gw-k"), timeout=30)
          for _ in range(3))
    )  # fmt: skip
    assert len({o.order_id for o in keyed}) == 1
    assert await stock(chain, "GW-K") == 10 - 3 - 1


async def test_shortage_passes_through_with_precondition_details(chain: Any) -> None:
    await set_stock(chain, "GW-S", 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chain.gateway.PlaceOrder(order_request("GW-S", 3), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = detail_of(caught.value, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("STOCK", "GW-S")]
    assert "only 2 in stock, 3 requested" in failure.violations[0].description
    assert await stock(chain, "GW-S") == 2


async def test_unknown_sku_passes_through_as_not_found(chain: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chain.gateway.PlaceOrder(order_request("GW-NOPE", 1), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = detail_of(caught.value, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("product", "GW-NOPE")


async def test_unknown_order_is_not_found_everywhere(chain: Any) -> None:
    unknown = str(uuid.uuid4())
    for method in ("GetOrder", "CancelOrder"):
        request = getattr(gateway_pb2, f"{method}Request")(order_id=unknown)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(chain.gateway, method)(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert detail_of(caught.value, error_details_pb2.ResourceInfo).resource_name == unknown
    watch = chain.gateway.WatchOrder(gateway_pb2.WatchOrderRequest(order_id=unknown), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert detail_of(caught.value, error_details_pb2.ResourceInfo).resource_name == unknown


async def test_foreign_page_token_is_invalid_argument(chain: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chain.gateway.ListOrders(
            gateway_pb2.ListOrdersRequest(page_token="bm90LWEtdG9rZW4"), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = detail_of(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in request.field_violations] == ["page_token"]


async def test_list_products_pages_through_the_gateway(chain: Any) -> None:
    skus: list[str] = []
    token = ""
    for _ in range(10):
        reply = await chain.gateway.ListProducts(
            inventory_pb2.ListProductsRequest(page_size=6, page_token=token), timeout=10
        )
        skus += [p.sku for p in reply.products]
        token = reply.next_page_token
        if not token:
            break
    assert len(skus) == 16 and skus == sorted(set(skus))


async def test_too_short_a_deadline_is_deadline_exceeded(chain: Any) -> None:
    await set_stock(chain, "GW-D", 5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chain.gateway.PlaceOrder(order_request("GW-D", 1, key="gw-d"), timeout=0.001)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Whatever part of the saga ran, the key now leads to one order and stock taken once.
    order = await chain.gateway.PlaceOrder(order_request("GW-D", 1, key="gw-d"), timeout=30)
    assert order.status == CONFIRMED
    assert await stock(chain, "GW-D") == 4


DOWNSTREAM_TIMEOUT_S = 1.0


@pytest.fixture
def short_downstream_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the services' channels when ``chain`` starts them (request it first).
    monkeypatch.setenv("SHOP_DOWNSTREAM_TIMEOUT_S", str(DOWNSTREAM_TIMEOUT_S))


async def test_watch_without_a_deadline_lasts_until_the_final_state(
    short_downstream_timeout: None, chain: Any
) -> None:
    """The default deadline for downstream calls must not cut a watch short: the
    stream ends at the order's final state (or when the client goes away)."""
    await set_stock(chain, "GW-W", 5)
    order = await chain.gateway.PlaceOrder(order_request("GW-W", 1), timeout=30)
    watch = chain.gateway.WatchOrder(gateway_pb2.WatchOrderRequest(order_id=order.order_id))
    assert (await watch.read()).order.status == CONFIRMED
    quiet = asyncio.ensure_future(watch.read())
    # Nothing happens to the order, so nothing may end the stream meanwhile.
    done, _ = await asyncio.wait({quiet}, timeout=3 * DOWNSTREAM_TIMEOUT_S)
    assert not done, f"the watch ended on its own: {await watch.code()} {await watch.details()}"
    await chain.gateway.CancelOrder(
        gateway_pb2.CancelOrderRequest(order_id=order.order_id), timeout=30
    )
    statuses = [(await quiet).order.status]
    while (event := await watch.read()) is not grpc.aio.EOF:
        statuses.append(event.order.status)
    assert statuses[-1] == CANCELLED
    assert await watch.code() == grpc.StatusCode.OK
