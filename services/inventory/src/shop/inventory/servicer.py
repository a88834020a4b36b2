"""The Inventory gRPC service: request validation and mapping onto the store."""

from __future__ import annotations

import grpc

from shop.api.orderlines import validate_items
from shop.inventory.store import InventoryStore, Line, ProductRow
from shop.runtime.validation import (
    Violations,
    decode_page_token,
    encode_page_token,
    page_size,
)
from shop.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc


def _product(row: ProductRow) -> common_pb2.Product:
    return common_pb2.Product(
        sku=row.sku, name=row.name, price_cents=row.price_cents, stock=row.stock
    )


class InventoryServicer(inventory_pb2_grpc.InventoryServicer):
    def __init__(self, store: InventoryStore) -> None:
        self._store = store

    async def ListProducts(
        self, request: inventory_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ListProductsResponse:
        limit = page_size(request.page_size, default=50, maximum=200)
        position = decode_page_token(request.page_token, ("sku",))
        rows = await self._store.list_products(position["sku"] if position else None, limit + 1)
        next_token = encode_page_token({"sku": rows[limit - 1].sku}) if len(rows) > limit else ""
        return inventory_pb2.ListProductsResponse(
            products=[_product(row) for row in rows[:limit]], next_page_token=next_token
        )

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ReserveResponse:
        violations = Violations()
        violations.identifier("reservation_id", request.reservation_id, max_len=160)
        validate_items(violations, request.items)
        violations.raise_if_any()
        reservation = await self._store.reserve(
            request.reservation_id, [Line(i.sku, i.quantity) for i in request.items]
        )
        return inventory_pb2.ReserveResponse(
            reservation_id=reservation.reservation_id,
            lines=[
                inventory_pb2.ReservedLine(
                    sku=ln.sku, quantity=ln.quantity, unit_price_cents=ln.unit_price_cents
                )
                for ln in reservation.lines
            ],
            total_cents=reservation.total_cents,
        )

    async def Release(
        self, request: inventory_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ReleaseResponse:
        violations = Violations()
        violations.identifier("reservation_id", request.reservation_id, max_len=160)
        violations.raise_if_any()
        released = await self._store.release(request.reservation_id)
        return inventory_pb2.ReleaseResponse(
            reservation_id=request.reservation_id, released=released
        )

    async def SetStock(
        self, request: inventory_pb2.SetStockRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Product:
        violations = Violations()
        violations.identifier("sku", request.sku, max_len=64)
        violations.int_range("stock", request.stock, 0, 2_000_000_000)
        if request.price_cents < 0:
            violations.add("price_cents", "must not be negative")
        if len(request.name) > 200:
            violations.add("name", "must be at most 200 characters")
        violations.raise_if_any()
        row = await self._store.set_stock(
            request.sku, request.stock, request.name, request.price_cents
        )
        return _product(row)
