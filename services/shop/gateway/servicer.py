"""The public Gateway API: validate at the edge, then call orders or inventory.

Every violation in a request is reported at once with its field path, so nothing
malformed reaches the inner services. Downstream failures pass through with their
code and details (see ``shop.runtime.errors``), never as UNKNOWN.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc

from shop.orderlines import validate_items
from shop.runtime.validation import Violations
from shop.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
)

MAX_PAGE_SIZE = 100


def _check_page(violations: Violations, size: int, token: str) -> None:
    if size < 0:
        violations.add("page_size", "must not be negative")
    if len(token) > 512:
        violations.add("page_token", "is not a token this service issued")


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self, orders: orders_pb2_grpc.OrdersStub, inventory: inventory_pb2_grpc.InventoryStub
    ) -> None:
        self._orders = orders
        self._inventory = inventory

    async def PlaceOrder(
        self, request: gateway_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        violations = Violations()
        violations.identifier("customer_id", request.customer_id, max_len=64)
        validate_items(violations, request.items)
        violations.identifier(
            "idempotency_key", request.idempotency_key, max_len=128, required=False
        )
        violations.raise_if_any()
        # Without a client key the gateway makes one, so its own retries to orders
        # (on UNAVAILABLE) still cannot place the order twice.
        key = request.idempotency_key or f"gw-{uuid.uuid4()}"
        result: common_pb2.Order = await self._orders.CreateOrder(
            orders_pb2.CreateOrderRequest(
                idempotency_key=key, customer_id=request.customer_id, items=request.items
            )
        )
        return result

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        violations = Violations()
        violations.uuid("order_id", request.order_id)
        violations.raise_if_any()
        result: common_pb2.Order = await self._orders.GetOrder(request)
        return result

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        violations = Violations()
        violations.identifier("customer_id", request.customer_id, max_len=64)
        _check_page(violations, request.page_size, request.page_token)
        violations.raise_if_any()
        result: orders_pb2.ListOrdersResponse = await self._orders.ListOrders(request)
        return result

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        violations = Violations()
        violations.uuid("order_id", request.order_id)
        violations.raise_if_any()
        result: common_pb2.Order = await self._orders.CancelOrder(request)
        return result

    async def ListProducts(
        self, request: inventory_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ListProductsResponse:
        violations = Violations()
        _check_page(violations, request.page_size, request.page_token)
        violations.raise_if_any()
        result: inventory_pb2.ListProductsResponse = await self._inventory.ListProducts(request)
        return result

    async def WatchOrder(
        self, request: orders_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orders_pb2.OrderEvent]:
        violations = Violations()
        violations.uuid("order_id", request.order_id)
        violations.raise_if_any()
        async for event in self._orders.WatchOrder(request):
            yield event
