"""Input validation at the edge: every mistake is INVALID_ARGUMENT with a
google.rpc.BadRequest naming each bad field, decided by the gateway alone (its
downstream services do not exist in these tests)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shop.credentials import LocalCredentials
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, inventory_pb2

from ..support.auth import channel_with, user_metadata

GOOD_KEY = "retry-key_1.a:b"


def item(sku: str, quantity: int) -> common_pb2.OrderItem:
    return common_pb2.OrderItem(sku=sku, quantity=quantity)


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    status = rpc_status.from_call(error)  # also checks code and message agree
    assert status is not None, "INVALID_ARGUMENT without status details"
    found = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            found += [(v.field, v.description) for v in request.field_violations]
    assert found, "no BadRequest field violations"
    return found


PLACE_ORDER_MISTAKES = [
    pytest.param({}, ["items"], id="items-empty"),
    pytest.param(
        {"items": [item(f"S-{n}", 1) for n in range(51)]},
        ["items"],
        id="items-too-many",
    ),
    pytest.param({"items": [item("", 1)]}, ["items[0].sku"], id="sku-empty"),
    pytest.param({"items": [item("ESP 001", 1)]}, ["items[0].sku"], id="sku-space"),
    pytest.param({"items": [item("ESP-001", 0)]}, ["items[0].quantity"], id="qty-zero"),
    pytest.param({"items": [item("ESP-001", -3)]}, ["items[0].quantity"], id="qty-neg"),
    pytest.param(
        {"items": [item("ESP-001", 1001)]},
        ["items[0].quantity"],
        id="qty-huge",
    ),
    pytest.param(
        {"items": [item("ESP-001", 1), item("MUG-003", 1), item("ESP-001", 2)]},
        ["items[2].sku"],
        id="sku-duplicate",
    ),
    pytest.param(
        {"items": [item("ESP-001", 1)], "idempotency_key": "two words"},
        ["idempotency_key"],
        id="key-space",
    ),
    pytest.param(
        {"items": [item("ESP-001", 1)], "idempotency_key": "k/1"},
        ["idempotency_key"],
        id="key-slash",
    ),
    pytest.param(
        {"items": [item("ESP-001", 1)], "idempotency_key": "k" * 129},
        ["idempotency_key"],
        id="key-long",
    ),
    pytest.param(
        {"items": [item("", 0), item("MUG-003", 5)], "idempotency_key": "é"},
        ["items[0].sku", "items[0].quantity", "idempotency_key"],
        id="everything-at-once",
    ),
]


@pytest.mark.parametrize(("request_args", "fields"), PLACE_ORDER_MISTAKES)
async def test_place_order_mistakes_name_their_fields(
    edge: Any, request_args: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge.PlaceOrder(gateway_pb2.PlaceOrderRequest(**request_args), timeout=10)
    found = violations(caught.value)
    assert [f for f, _ in found] == fields
    assert all(description for _, description in found)
    assert all(f"{f}: " in caught.value.details() for f in fields)


async def test_duplicate_sku_description_names_the_sku(edge: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(items=[item("MUG-003", 1), item("MUG-003", 1)]),
            timeout=10,
        )
    assert violations(caught.value) == [("items[1].sku", "'MUG-003' appears more than once")]


async def test_a_valid_order_goes_downstream(edge: Any) -> None:
    # Nothing listens where orders should be: a valid request gets that far and no further.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge.PlaceOrder(
            gateway_pb2.PlaceOrderRequest(items=[item("ESP-001", 1)], idempotency_key=GOOD_KEY),
            timeout=20,
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("", id="empty"),
        pytest.param("-lead", id="symbol"),
        pytest.param("c" * 65, id="long"),
    ],
)
async def test_a_token_subject_that_is_no_customer_id_is_refused(
    edge_address: str, credentials: LocalCredentials, subject: str
) -> None:
    """The customer is the token's subject: one that cannot be a customer id is
    refused before anything goes downstream, never altered to fit."""
    async with channel_with(edge_address, user_metadata(credentials, subject)) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.PlaceOrder(
                gateway_pb2.PlaceOrderRequest(items=[item("ESP-001", 1)], idempotency_key=GOOD_KEY),
                timeout=10,
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not a usable customer id" in (caught.value.details() or "")


@pytest.mark.parametrize("method", ["GetOrder", "CancelOrder"])
@pytest.mark.parametrize("order_id", ["", "42", "not-a-uuid", "123e4567-e89b-12d3-a456"])
async def test_order_ids_must_be_uuids(edge: Any, method: str, order_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        request = getattr(gateway_pb2, f"{method}Request")(order_id=order_id)
        await getattr(edge, method)(request, timeout=10)
    assert [f for f, _ in violations(caught.value)] == ["order_id"]


async def test_watch_order_id_must_be_a_uuid(edge: Any) -> None:
    stream = edge.WatchOrder(gateway_pb2.WatchOrderRequest(order_id="nope"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert [f for f, _ in violations(caught.value)] == ["order_id"]


@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        ({"page_size": -1}, ["page_size"]),
        ({"page_token": "t" * 513}, ["page_token"]),
        ({"page_size": -5, "page_token": "t" * 513}, ["page_size", "page_token"]),
    ],
)
async def test_list_orders_mistakes(
    edge: Any, request_args: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge.ListOrders(gateway_pb2.ListOrdersRequest(**request_args), timeout=10)
    assert [f for f, _ in violations(caught.value)] == fields


async def test_list_products_page_size_must_not_be_negative(edge: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge.ListProducts(inventory_pb2.ListProductsRequest(page_size=-1), timeout=10)
    assert [f for f, _ in violations(caught.value)] == ["page_size"]
