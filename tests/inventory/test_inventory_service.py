"""The Inventory gRPC service on loopback: statuses, details, paging, route trailer."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from shop.runtime.callscope import ROUTE_TRAILER
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc
from shop.v1.inventory_pb2 import ReleaseRequest, ReserveRequest

from ..support.catalog import stock_of
from ..support.status import details_of

Stub = inventory_pb2_grpc.InventoryStub


def item(sku: str, quantity: int) -> common_pb2.OrderItem:
    return common_pb2.OrderItem(sku=sku, quantity=quantity)


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    (request,) = details_of(error, error_details_pb2.BadRequest)
    return [v.field for v in request.field_violations]


async def stock(stub: Stub, sku: str) -> int:
    reply = await stub.ListProducts(inventory_pb2.ListProductsRequest(page_size=200), timeout=10)
    return stock_of(reply, sku)


async def test_reserve_reports_lines_total_and_serving_pod(inventory_stub: Stub) -> None:
    call = inventory_stub.Reserve(
        ReserveRequest(reservation_id="o-1:1", items=[item("ESP-001", 2), item("BRU-015", 1)]),
        timeout=10,
    )
    reply = await call
    assert [(ln.sku, ln.quantity, ln.unit_price_cents) for ln in reply.lines] == [
        ("BRU-015", 1, 450),
        ("ESP-001", 2, 2490),
    ]
    assert reply.total_cents == 450 + 2 * 2490
    assert (ROUTE_TRAILER, "inventory/inventory-t0") in tuple(await call.trailing_metadata())
    assert await stock(inventory_stub, "ESP-001") == 98


async def test_invalid_reserve_names_every_bad_field(inventory_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inventory_stub.Reserve(
            ReserveRequest(
                reservation_id="",
                items=[item("ESP-001", 0), item("bad sku", 1), item("ESP-001", 1)],
            ),
            timeout=10,
        )
    assert bad_fields(caught.value) == [
        "reservation_id",
        "items[0].quantity",
        "items[1].sku",
        "items[2].sku",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inventory_stub.Reserve(ReserveRequest(reservation_id="r-empty"), timeout=10)
    assert bad_fields(caught.value) == ["items"]
    assert await stock(inventory_stub, "ESP-001") == 100


async def test_unknown_sku_is_not_found_with_resource_info(inventory_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inventory_stub.Reserve(
            ReserveRequest(reservation_id="r-x", items=[item("NOPE-1", 1)]), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    (info,) = details_of(caught.value, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("product", "NOPE-1")


async def test_shortage_is_failed_precondition_naming_the_sku(inventory_stub: Stub) -> None:
    await inventory_stub.SetStock(inventory_pb2.SetStockRequest(sku="MUG-003", stock=2), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inventory_stub.Reserve(
            ReserveRequest(reservation_id="r-s", items=[item("ESP-001", 1), item("MUG-003", 3)]),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (failure,) = details_of(caught.value, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("STOCK", "MUG-003")]
    assert await stock(inventory_stub, "ESP-001") == 100
    assert await stock(inventory_stub, "MUG-003") == 2


async def test_release_tombstone_refuses_a_late_reserve(inventory_stub: Stub) -> None:
    released = await inventory_stub.Release(ReleaseRequest(reservation_id="late:1"), timeout=10)
    assert (released.reservation_id, released.released) == ("late:1", False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inventory_stub.Reserve(
            ReserveRequest(reservation_id="late:1", items=[item("ESP-001", 5)]), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (failure,) = details_of(caught.value, error_details_pb2.PreconditionFailure)
    assert failure.violations[0].subject == "late:1"
    assert await stock(inventory_stub, "ESP-001") == 100

    request = ReserveRequest(reservation_id="kept:1", items=[item("ESP-001", 5)])
    await inventory_stub.Reserve(request, timeout=10)
    await inventory_stub.Reserve(request, timeout=10)
    assert await stock(inventory_stub, "ESP-001") == 95
    first = await inventory_stub.Release(ReleaseRequest(reservation_id="kept:1"), timeout=10)
    again = await inventory_stub.Release(ReleaseRequest(reservation_id="kept:1"), timeout=10)
    assert (first.released, again.released) == (True, False)
    assert await stock(inventory_stub, "ESP-001") == 100


async def test_list_products_pages_with_tokens(inventory_stub: Stub) -> None:
    skus: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await inventory_stub.ListProducts(
            inventory_pb2.ListProductsRequest(page_size=5, page_token=token), timeout=10
        )
        pages += 1
        assert len(reply.products) <= 5
        skus += [p.sku for p in reply.products]
        token = reply.next_page_token
        if not token:
            break
        assert pages < 10, "paging does not end"
    assert pages == 4  # 16 products: 5 + 5 + 5 + 1
    assert skus == sorted(set(skus)) and len(skus) == 16
    everything = await inventory_stub.ListProducts(inventory_pb2.ListProductsRequest(), timeout=10)
    assert [p.sku for p in everything.products] == skus
    assert everything.next_page_token == ""


@pytest.mark.parametrize(
    ("paging", "field"),
    [
        (inventory_pb2.ListProductsRequest(page_size=-1), "page_size"),
        (inventory_pb2.ListProductsRequest(page_token="not a token"), "page_token"),
        # valid base64 JSON, wrong keys
        (inventory_pb2.ListProductsRequest(page_token="eyJ4IjoxfQ"), "page_token"),
    ],
    ids=["page_size", "not-a-token", "wrong-keys"],
)
async def test_list_products_rejects_bad_paging(
    inventory_stub: Stub, paging: inventory_pb2.ListProductsRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inventory_stub.ListProducts(paging, timeout=10)
    assert bad_fields(caught.value) == [field]


async def test_set_stock_creates_and_validates(inventory_stub: Stub) -> None:
    product = await inventory_stub.SetStock(
        inventory_pb2.SetStockRequest(sku="NEW-1", stock=3, name="New", price_cents=99), timeout=10
    )
    assert (product.sku, product.name, product.price_cents, product.stock) == (
        "NEW-1",
        "New",
        99,
        3,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inventory_stub.SetStock(
            inventory_pb2.SetStockRequest(sku="", stock=-1, price_cents=-5), timeout=10
        )
    assert bad_fields(caught.value) == ["sku", "stock", "price_cents"]
    assert await stock(inventory_stub, "NEW-1") == 3
