"""Client mistakes through a real local cluster, asked of the gateway: each gets its
own status code with google.rpc details naming what was wrong, never UNKNOWN or
INTERNAL, and none of them takes stock. Calls carry customer c1's bearer token.

Also what a generic client (grpcurl, another language's stub) can send that our own
stubs cannot: bytes that are not the request message, thousands of bad items."""

from __future__ import annotations

import base64
import json
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
)

from ..support.auth import channel_with
from ..support.clusters import ClusterFactory

# Stocked by the module fixture; every test leaves it untouched.
SKU, STOCK = "ERR-STOCKED", 5


def _raw_token(position: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


# Page tokens with the keys orders and inventory issue, and values they never do.
FORGED_ORDERS_TOKEN = _raw_token({"c": {"$gt": ""}, "o": ["x"]})
FORGED_PRODUCTS_TOKEN = _raw_token({"sku": 10**30})


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    started = module_cluster_factory(gateway=1, orders=2, inventory=2)
    with grpc.insecure_channel(started.target("inventory")) as channel:
        inventory_pb2_grpc.InventoryStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=SKU, stock=STOCK, price_cents=100),
            metadata=started.end_user_metadata("stock-admin", admin=True),
            timeout=30,
        )
    return started


@pytest.fixture
async def gateway(cluster: LocalCluster) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    async with channel_with(cluster.gateway_target, cluster.end_user_metadata("c1")) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


@pytest.fixture(autouse=True)
async def _stock_untouched(
    cluster: LocalCluster, gateway: gateway_pb2_grpc.GatewayStub
) -> AsyncIterator[None]:
    yield
    reply = await gateway.ListProducts(inventory_pb2.ListProductsRequest(page_size=100), timeout=30)
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


# The customer comes from the token (tests/e2e/test_auth.py covers a bad one).
@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        pytest.param({}, ["items"], id="items"),
        pytest.param({"items": [item("", 1)]}, ["items[0].sku"], id="sku"),
        pytest.param({"items": [item(SKU, 0)]}, ["items[0].quantity"], id="quantity"),
        pytest.param({"items": [item(SKU, 1), item(SKU, 1)]}, ["items[1].sku"], id="duplicate-sku"),
        pytest.param(
            {"items": [item(SKU, 1)], "idempotency_key": "no spaces"},
            ["idempotency_key"],
            id="idempotency_key",
        ),
        # A pattern checked with $ alone lets a trailing newline through.
        pytest.param(
            {"items": [item(SKU, 1)], "idempotency_key": "key\n"},
            ["idempotency_key"],
            id="idempotency_key-newline",
        ),
        pytest.param({"items": [item("ESP-001\n", 1)]}, ["items[0].sku"], id="sku-newline"),
        pytest.param(
            {
                "items": [item(SKU, STOCK + 1), item("x y", -1)],
                "idempotency_key": "no spaces",
            },
            ["items[1].sku", "items[1].quantity", "idempotency_key"],
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


ORDER_REQUESTS = {
    "GetOrder": gateway_pb2.GetOrderRequest,
    "CancelOrder": gateway_pb2.CancelOrderRequest,
}


@pytest.mark.parametrize("method", ORDER_REQUESTS)
async def test_order_id_must_be_a_uuid(gateway: Any, method: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(gateway, method)(ORDER_REQUESTS[method](order_id="order-7"), timeout=30)
    assert bad_fields(caught.value) == ["order_id"]


async def test_watch_order_id_must_be_a_uuid(gateway: Any) -> None:
    stream = gateway.WatchOrder(gateway_pb2.WatchOrderRequest(order_id="order-7"), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert bad_fields(caught.value) == ["order_id"]


@pytest.mark.parametrize(
    ("method", "request_message", "fields"),
    [
        ("ListOrders", gateway_pb2.ListOrdersRequest(page_size=-1), ["page_size"]),
        ("ListProducts", inventory_pb2.ListProductsRequest(page_size=-1), ["page_size"]),
        # Tokens are checked where they are issued (orders, inventory): passed through.
        ("ListOrders", gateway_pb2.ListOrdersRequest(page_token="forged"), ["page_token"]),
        # The right keys with values no service issues: still the client's mistake.
        ("ListOrders", gateway_pb2.ListOrdersRequest(page_token=FORGED_ORDERS_TOKEN),
         ["page_token"]),
        ("ListProducts", inventory_pb2.ListProductsRequest(page_token=FORGED_PRODUCTS_TOKEN),
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
    for method, request_type in ORDER_REQUESTS.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(gateway, method)(request_type(order_id=unknown), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, method
        info = detail(caught.value, error_details_pb2.ResourceInfo)
        assert (info.resource_type, info.resource_name) == ("order", unknown)
    stream = gateway.WatchOrder(gateway_pb2.WatchOrderRequest(order_id=unknown), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert detail(caught.value, error_details_pb2.ResourceInfo).resource_name == unknown


async def test_not_enough_stock_names_the_sku(gateway: Any) -> None:
    request = gateway_pb2.PlaceOrderRequest(
        items=[item("ESP-001", 1), item(SKU, STOCK + 1)], idempotency_key="short"
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
            gateway_pb2.PlaceOrderRequest(items=[item(SKU, 1), item("NOPE", 1)]),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = detail(caught.value, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("product", "NOPE")


async def test_idempotency_key_reused_for_another_order(gateway: Any) -> None:
    key = f"reuse-{uuid.uuid4()}"
    first = await gateway.PlaceOrder(
        gateway_pb2.PlaceOrderRequest(items=[item("MUG-003", 1)], idempotency_key=key),
        timeout=30,
    )  # fmt: skip
    assert first.status == common_pb2.ORDER_STATUS_CONFIRMED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(items=[item("MUG-003", 2)], idempotency_key=key),
            timeout=30,
        )
    assert bad_fields(caught.value) == ["idempotency_key"]


async def test_too_short_a_deadline_is_deadline_exceeded(gateway: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(items=[item("ESP-001", 1)]),
            timeout=0.001,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # A read two hops deep with 0.1 ms to live. gRPC ends a call with DEADLINE_EXCEEDED
    # when the client's deadline timer fires before the answer is in; on a loaded
    # machine the timer can run late and a fast answer win, so one attempt may end OK.
    # What must hold: the short deadline cuts calls, and a cut call is
    # DEADLINE_EXCEEDED, never another code.
    codes = []
    for _ in range(20):
        try:
            await gateway.ListProducts(inventory_pb2.ListProductsRequest(), timeout=0.0001)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}, codes


# --- what generic clients can send -----------------------------------------------------


async def test_thousands_of_bad_items_get_a_short_invalid_argument(gateway: Any) -> None:
    """Over the item limit, items are not checked one by one: one violation."""
    items = [item(f"bad sku {i}", 0) for i in range(5000)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(gateway_pb2.PlaceOrderRequest(items=items), timeout=30)
    assert bad_fields(caught.value) == ["items"]
    assert caught.value.details() == "items: must contain at most 50 items, got 5000"


async def test_many_violations_are_capped_with_a_count_of_the_rest(gateway: Any) -> None:
    long_sku = "S" * 10_000
    items = [item(long_sku, 0) for _ in range(50)]  # 149 violations: sku, quantity, duplicate
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.PlaceOrder(gateway_pb2.PlaceOrderRequest(items=items), timeout=30)
    request = detail(caught.value, error_details_pb2.BadRequest)
    fields = [(v.field, v.description) for v in request.field_violations]
    assert len(fields) == 21
    assert fields[-1] == ("items", "and 129 more violations")
    # The sku is echoed shortened (in the duplicate's description), never whole.
    raw = dict(caught.value.trailing_metadata() or ())[STATUS_DETAILS_KEY]
    assert len(raw) + len(caught.value.details()) < 4096
    assert "S" * 33 not in caught.value.details()


def _place_order_body(second_sku: bytes) -> bytes:
    body = gateway_pb2.PlaceOrderRequest(items=[item("ESP-001", 1), item("XX", 1)])
    raw = body.SerializeToString()
    assert raw.count(b"XX") == 1
    return raw.replace(b"XX", second_sku)


@pytest.mark.parametrize(
    ("body", "violation"),
    [
        (_place_order_body(b"\xff\xfe"), "items[1].sku: is not valid UTF-8"),
        (_place_order_body(b"XX")[:-4], "items[1]: is truncated"),
        (b"\x12" + b"\xff" * 10, "items[0]: is truncated"),
        (b"\xff" * 12, "request: ends in the middle of a field (truncated or not protobuf)"),
    ],
    ids=["invalid-utf8", "truncated", "huge-length", "garbage"],
)
async def test_bytes_that_are_not_the_request_are_invalid_argument(
    cluster: LocalCluster, body: bytes, violation: str
) -> None:
    """What grpcurl or a hand-made client can send: INVALID_ARGUMENT naming the field,
    and no traceback in the gateway's log."""
    async with channel_with(cluster.gateway_target, cluster.end_user_metadata("c1")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/shop.v1.Gateway/PlaceOrder")(body, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == violation
    assert bad_fields(caught.value) == [violation.split(":", 1)[0]]
    (replica,) = cluster.replicas_of("gateway")
    assert "Traceback" not in replica.log_path.read_text()
