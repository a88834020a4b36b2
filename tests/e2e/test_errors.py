"""Client mistakes through a real local cluster, asked of the gateway: each gets its
own status code with google.rpc details naming what was wrong, never UNKNOWN or
INTERNAL, and none of them takes stock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from shop.local.cluster import LocalCluster
from shop.runtime.errors import STATUS_DETAILS_KEY
from shop.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    orders_pb2,
)

from ..conftest import ClusterFactory

# Stocked by the module fixture; every test leaves it untouched.
SKU, STOCK = "ERR-STOCKED", 5


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    started = module_cluster_factory(gateway=1, orders=2, inventory=2)
    with grpc.insecure_channel(started.target("inventory")) as channel:
        inventory_pb2_grpc.InventoryStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=SKU, stock=STOCK, price_cents=100), timeout=30
        )
    return started


@pytest.fixture
async def gateway(cluster: LocalCluster) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(cluster.gateway_target) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


@pytest.fixture(autouse=True)
async def _stock_untouched(cluster: LocalCluster) -> AsyncIterator[None]:
    yield
    async with grpc.aio.insecure_channel(cluster.target("inventory")) as channel:
        reply = await inventory_pb2_grpc.InventoryStub(channel).ListProducts(
            inventory_pb2.ListProductsRequest(page_size=200), timeout=30
        )
    assert next(p.stock for p in reply.products if p.sku == SKU) == STOCK


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status from the ``grpc-status-details-bin`` trailer."""
    raw = dict(error.trailing_metadata() or ()).get(STATUS_DETAILS_KEY)
    assert raw is not None, f"{error.code().name} without status details: {error.details()}"
    status = status_pb2.Status.FromString(raw)
    assert (status.code, status.message) == (error.code().value[0], error.details())
    return status


def detail(error: grpc.aio.AioRpcError, kind: type) -> Any:
    for packed in status_of(error).details:
        message = kind()
        if packed.Unpack(message):
            return message
    raise AssertionError(f"no {kind.__name__} in the details of {error.code().name}")


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    request = detail(error, error_details_pb2.BadRequest)
    return [v.field for v in request.field_violations]


def item(sku: str, quantity: int) -> common_pb2.OrderItem:
    return common_pb2.OrderItem(sku=sku, quantity=quantity)


@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        pytest.param({"items": [item(SKU, 1)]}, ["customer_id"], id="customer_id"),
        pytest.param({"customer_id": "c1"}, ["items"], id="items"),
        pytest.param({"customer_id": "c1", "items": [item("", 1)]}, ["items[0].sku"], id="sku"),
        pytest.param(
            {"customer_id": "c1", "items": [item(SKU, 0)]}, ["items[0].quantity"], id="quantity"
        ),
        pytest.param(
            {"customer_id": "c1", "items": [item(SKU, 1), item(SKU, 1)]},
            ["items[1].sku"],
            id="duplicate-sku",
        ),
        pytest.param(
            {"customer_id": "c1", "items": [item(SKU, 1)], "idempotency_key": "no spaces"},
            ["idempotency_key"],
            id="idempotency_key",
        ),
        pytest.param(
            {"customer_id": "c 1", "items": [item(SKU, STOCK + 1), item("x y", -1)]},
            ["customer_id", "items[1].sku", "items[1].quantity"],
            id="all-at-once",
        ),
    ],
)
async def test_place_order_mistakes(
    gateway: Any, request_args: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(gateway_pb2.PlaceOrderRequest(**request_args), timeout=30)
    assert bad_fields(caught.value) == fields


@pytest.mark.parametrize("method", ["GetOrder", "CancelOrder"])
async def test_order_id_must_be_a_uuid(gateway: Any, method: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(gateway, method)(orders_pb2.GetOrderRequest(order_id="order-7"), timeout=30)
    assert bad_fields(caught.value) == ["order_id"]


async def test_watch_order_id_must_be_a_uuid(gateway: Any) -> None:
    stream = gateway.WatchOrder(orders_pb2.WatchOrderRequest(order_id="order-7"), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert bad_fields(caught.value) == ["order_id"]


@pytest.mark.parametrize(
    ("method", "request_message", "fields"),
    [
        ("ListOrders", orders_pb2.ListOrdersRequest(customer_id="c1", page_size=-1), ["page_size"]),
        ("ListProducts", inventory_pb2.ListProductsRequest(page_size=-1), ["page_size"]),
        # Tokens are checked where they are issued (orders, inventory): passed through.
        ("ListOrders", orders_pb2.ListOrdersRequest(customer_id="c1", page_token="forged"),
         ["page_token"]),
        ("ListProducts", inventory_pb2.ListProductsRequest(page_token="forged"), ["page_token"]),
    ],
)  # fmt: skip
async def test_paging_mistakes(
    gateway: Any, method: str, request_message: Any, fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(gateway, method)(request_message, timeout=30)
    assert bad_fields(caught.value) == fields


async def test_unknown_order_is_not_found(gateway: Any) -> None:
    unknown = str(uuid.uuid4())
    for method in ("GetOrder", "CancelOrder"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(gateway, method)(orders_pb2.GetOrderRequest(order_id=unknown), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, method
        info = detail(caught.value, error_details_pb2.ResourceInfo)
        assert (info.resource_type, info.resource_name) == ("order", unknown)
    stream = gateway.WatchOrder(orders_pb2.WatchOrderRequest(order_id=unknown), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert detail(caught.value, error_details_pb2.ResourceInfo).resource_name == unknown


async def test_not_enough_stock_names_the_sku(gateway: Any) -> None:
    request = gateway_pb2.PlaceOrderRequest(
        customer_id="c1", items=[item("ESP-001", 1), item(SKU, STOCK + 1)], idempotency_key="short"
    )
    for _ in range(2):  # the retry replays the same answer
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.PlaceOrder(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        failure = detail(caught.value, error_details_pb2.PreconditionFailure)
        assert [(v.type, v.subject) for v in failure.violations] == [("STOCK", SKU)]
        assert f"only {STOCK} in stock, {STOCK + 1} requested" in failure.violations[0].description


async def test_unknown_product_is_not_found(gateway: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(customer_id="c1", items=[item(SKU, 1), item("NOPE", 1)]),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = detail(caught.value, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("product", "NOPE")


async def test_idempotency_key_reused_for_another_order(gateway: Any) -> None:
    key = f"reuse-{uuid.uuid4()}"
    first = await gateway.PlaceOrder(
        gateway_pb2.PlaceOrderRequest(customer_id="c1", items=[item("MUG-003", 1)],
                                      idempotency_key=key),
        timeout=30,
    )  # fmt: skip
    assert first.status == common_pb2.ORDER_STATUS_CONFIRMED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(
                customer_id="c1", items=[item("MUG-003", 2)], idempotency_key=key
            ),
            timeout=30,
        )
    assert bad_fields(caught.value) == ["idempotency_key"]


async def test_too_short_a_deadline_is_deadline_exceeded(gateway: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(customer_id="c1", items=[item("ESP-001", 1)]),
            timeout=0.001,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.ListProducts(inventory_pb2.ListProductsRequest(), timeout=0.0001)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
