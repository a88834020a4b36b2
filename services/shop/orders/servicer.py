"""The Orders gRPC service: placing, reading, cancelling and watching orders.

The saga behind CreateOrder lives in ``shop.orders.placement``; this module maps
requests onto it and onto the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from shop.orderlines import validate_items
from shop.orders.placement import OrderPlacement, run_to_completion
from shop.orders.store import (
    CANCELLED,
    CANCELLING,
    CONFIRMED,
    PENDING,
    VISIBLE_STATES,
    Item,
    OrderRecord,
    request_hash,
)
from shop.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from shop.runtime.validation import Violations, decode_page_token, encode_page_token, page_size
from shop.v1 import common_pb2, orders_pb2, orders_pb2_grpc

_STATUS = {
    PENDING: common_pb2.ORDER_STATUS_PENDING,
    CONFIRMED: common_pb2.ORDER_STATUS_CONFIRMED,
    CANCELLING: common_pb2.ORDER_STATUS_CANCELLING,
    CANCELLED: common_pb2.ORDER_STATUS_CANCELLED,
}


def to_message(order: OrderRecord) -> common_pb2.Order:
    return common_pb2.Order(
        order_id=order.order_id,
        customer_id=order.customer_id,
        items=[common_pb2.OrderItem(sku=i.sku, quantity=i.quantity) for i in order.items],
        total_cents=order.total_cents,
        status=_STATUS.get(order.status, common_pb2.ORDER_STATUS_UNSPECIFIED),
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


class OrdersServicer(orders_pb2_grpc.OrdersServicer):
    def __init__(self, placement: OrderPlacement, watch_interval_s: float = 0.5) -> None:
        self._placement = placement
        self._store = placement.store
        self._watch_interval_s = watch_interval_s

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        violations = Violations()
        violations.identifier("idempotency_key", request.idempotency_key, max_len=128)
        violations.identifier("customer_id", request.customer_id, max_len=64)
        validate_items(violations, request.items)
        violations.raise_if_any()
        items = [Item(i.sku, i.quantity) for i in request.items]
        order = await self._store.create_or_get(request.idempotency_key, request.customer_id, items)
        if order.request_hash != request_hash(request.customer_id, items):
            raise InvalidArgument.single(
                "idempotency_key", "was already used for a different order"
            )
        # Shielded: a caller that gives up mid-way must not stop the saga between
        # reserving stock and recording it.
        placed = await run_to_completion(self._placement.place(order))
        return to_message(placed)

    async def GetOrder(
        self, request: orders_pb2.OrderRef, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        return to_message(await self._visible(request))

    async def _visible(self, ref: orders_pb2.OrderRef) -> OrderRecord:
        """The customer's order; NOT_FOUND also for another customer's order, so an
        order id reveals nothing to anyone but its owner."""
        violations = Violations()
        violations.uuid("order_id", ref.order_id)
        violations.identifier("customer_id", ref.customer_id, max_len=64)
        violations.raise_if_any()
        order = await self._store.get(ref.order_id)
        if (
            order is None
            or order.status not in VISIBLE_STATES
            or order.customer_id != ref.customer_id
        ):
            raise NotFound("order", ref.order_id)
        return order

    async def ListOrders(
        self, request: orders_pb2.ListCustomerOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        violations = Violations()
        violations.identifier("customer_id", request.customer_id, max_len=64)
        violations.raise_if_any()
        limit = page_size(request.page_size, default=20, maximum=100)
        position = decode_page_token(request.page_token, ("c", "o"))
        after = (position["c"], position["o"]) if position else None
        records = await self._store.list_for_customer(request.customer_id, after, limit + 1)
        next_token = ""
        if len(records) > limit:
            last = records[limit - 1]
            next_token = encode_page_token({"c": last.created_at, "o": last.order_id})
        return orders_pb2.ListOrdersResponse(
            orders=[to_message(r) for r in records[:limit]], next_page_token=next_token
        )

    async def CancelOrder(
        self, request: orders_pb2.OrderRef, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        order = await self._visible(request)
        if order.status == PENDING:
            raise FailedPrecondition(
                [PreconditionViolation("ORDER_STATE", order.order_id, "is still being placed")]
            )
        if order.status == CONFIRMED:
            order = await self._store.transition(order, CANCELLING, (CONFIRMED,)) or (
                await self._visible(request)
            )
        if order.status == CANCELLING:
            order = await run_to_completion(self._placement.finish_cancel(order))
        return to_message(order)

    async def WatchOrder(
        self, request: orders_pb2.OrderRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orders_pb2.OrderEvent]:
        order = await self._visible(request)
        # Replicas share the database, not memory: polling sees changes made anywhere.
        last_seen = None
        while True:
            stamp = (order.status, order.updated_at)
            if stamp != last_seen:
                last_seen = stamp
                yield orders_pb2.OrderEvent(order=to_message(order))
            if order.status == CANCELLED:
                return
            await asyncio.sleep(self._watch_interval_s)
            order = await self._visible(request)
