"""The Orders gRPC service: placing, reading, cancelling and watching orders.

The saga behind CreateOrder lives in ``shop.orders.placement``; this module maps
requests onto it and onto the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from shop.api.orderlines import validate_items
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
from shop.orders.watch import OrderWatchHub
from shop.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from shop.runtime.streams import StreamConfig, StreamLifetimes, StreamLimiter
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
    def __init__(
        self,
        placement: OrderPlacement,
        watch_interval_s: float = 0.5,
        hub: OrderWatchHub | None = None,
        streams: StreamConfig | None = None,
    ) -> None:
        self._placement = placement
        self._store = placement.store
        # Without a hub of the app's, one of its own: its loop runs only while
        # someone watches, so it needs no shutdown.
        self._hub = hub or OrderWatchHub(self._store, watch_interval_s)
        self._streams = streams or StreamConfig.from_env()
        # Only the replica cap here: the callers are gateway replicas, each carrying
        # many end users' streams and capping them per user itself.
        self._watchers = StreamLimiter(
            "orders", "WatchOrder streams", self._streams.max_per_replica, None
        )
        self._lifetimes = StreamLifetimes(self._streams)

    def end_streams(self) -> None:
        """Ends every WatchOrder stream with OK (for ``Runtime.on_drain``)."""
        self._lifetimes.end_all()

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
        # Refused before any database work: a caller at the cap costs next to nothing.
        async with self._watchers.acquire(context.peer() or "unknown"):
            order = await self._visible(request)
            # Ends OK when it has lived its (jittered) lifetime or the replica drains;
            # the caller re-subscribes (elsewhere, after a drain) and gets the current
            # state first, so nothing is lost.
            # The hub's one poll per replica sees changes made through any replica.
            with self._lifetimes.start() as lifetime, self._hub.subscribe(order) as changes:
                yield orders_pb2.OrderEvent(order=to_message(order))
                while order.status != CANCELLED:
                    try:
                        async with lifetime.timeout():
                            order = await changes.next()
                    except TimeoutError:
                        return
                    if order.status not in VISIBLE_STATES:
                        # Rolled back or rejected: no order for clients, as GetOrder says.
                        raise NotFound("order", order.order_id)
                    yield orders_pb2.OrderEvent(order=to_message(order))
