"""The public Gateway API: authenticate and validate at the edge, then call orders or
inventory.

Every call carries an end user's bearer token, checked by the runtime before a
handler runs (the access rules are in ``shop.gateway.app``); the customer is the
token's subject (:func:`current_end_user`), never a request field, and is passed to
orders, which answers NOT_FOUND for another customer's order. Every violation in a
request is reported at once with its field path, so nothing malformed reaches the
inner services. Downstream failures pass through with their code and details (see
``shop.runtime.errors``), never as UNKNOWN.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc

from shop.api.orderlines import validate_items
from shop.runtime.auth import Unauthenticated, current_end_user
from shop.runtime.streams import StreamConfig, StreamLifetimes, StreamLimiter
from shop.runtime.validation import Violations, is_identifier
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
CUSTOMER_ID_MAX_LEN = 64
# The call to orders outlives this stream's own lifetime by this much, so that it is
# the lifetime (OK, resumable), never the downstream deadline, that ends a stream.
WATCH_DEADLINE_MARGIN_S = 5.0


def _check_page(violations: Violations, size: int, token: str) -> None:
    if size < 0:
        violations.add("page_size", "must not be negative")
    if len(token) > 512:
        violations.add("page_token", "is not a token this service issued")


def customer_id() -> str:
    """The calling end user's customer id: the subject of their verified token."""
    subject = current_end_user().subject
    if len(subject) > CUSTOMER_ID_MAX_LEN or not is_identifier(subject):
        # Orders stores customer ids as identifiers; a provider whose subjects do not
        # fit must map them (a custom claim) rather than have them silently altered.
        raise Unauthenticated(
            f"the token's subject is not a usable customer id (at most {CUSTOMER_ID_MAX_LEN} "
            "letters, digits and _ . : -)"
        )
    return subject


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        orders: orders_pb2_grpc.OrdersStub,
        inventory: inventory_pb2_grpc.InventoryStub,
        streams: StreamConfig | None = None,
    ) -> None:
        self._orders = orders
        self._inventory = inventory
        self._streams = streams or StreamConfig.from_env()
        # Per replica (memory) and per end user (one customer cannot take them all).
        self._watchers = StreamLimiter(
            "gateway",
            "WatchOrder streams",
            self._streams.max_per_replica,
            self._streams.max_per_caller,
        )
        self._lifetimes = StreamLifetimes(self._streams)

    def end_streams(self) -> None:
        """Ends every WatchOrder stream with OK (for ``Runtime.on_drain``); their
        calls to orders are cancelled as they end."""
        self._lifetimes.end_all()

    async def PlaceOrder(
        self, request: gateway_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        customer = customer_id()
        violations = Violations()
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
                idempotency_key=key, customer_id=customer, items=request.items
            )
        )
        return result

    def _order_ref(self, order_id: str) -> orders_pb2.OrderRef:
        customer = customer_id()
        violations = Violations()
        violations.uuid("order_id", order_id)
        violations.raise_if_any()
        return orders_pb2.OrderRef(order_id=order_id, customer_id=customer)

    async def GetOrder(
        self, request: gateway_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        result: common_pb2.Order = await self._orders.GetOrder(self._order_ref(request.order_id))
        return result

    async def ListOrders(
        self, request: gateway_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        customer = customer_id()
        violations = Violations()
        _check_page(violations, request.page_size, request.page_token)
        violations.raise_if_any()
        result: orders_pb2.ListOrdersResponse = await self._orders.ListOrders(
            orders_pb2.ListCustomerOrdersRequest(
                customer_id=customer, page_size=request.page_size, page_token=request.page_token
            )
        )
        return result

    async def CancelOrder(
        self, request: gateway_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Order:
        result: common_pb2.Order = await self._orders.CancelOrder(self._order_ref(request.order_id))
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
        self, request: gateway_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orders_pb2.OrderEvent]:
        ref = self._order_ref(request.order_id)
        async with self._watchers.acquire(ref.customer_id):
            with self._lifetimes.start() as lifetime:
                # An explicit timeout: the channel's default downstream deadline is for
                # unary calls and would cut every stream a client opened without one.
                call = self._orders.WatchOrder(
                    ref, timeout=lifetime.remaining_s() + WATCH_DEADLINE_MARGIN_S
                )
                try:
                    while True:
                        try:
                            async with lifetime.timeout():
                                event = await call.read()
                        except TimeoutError:
                            # Lifetime over or this replica draining: OK, and the client
                            # re-subscribes (on another replica after a drain).
                            return
                        if event is grpc.aio.EOF:
                            # Orders ended it OK: a final state, its lifetime, or its
                            # replica draining. Ours ends OK too, and the client
                            # re-subscribes as it does at a lifetime: simpler than doing
                            # it here, which would have to tell a final state from the
                            # rest and drop the current state a new stream repeats.
                            return
                        yield event
                finally:
                    # Ends orders' side as soon as ours ends, however it ended.
                    call.cancel()
