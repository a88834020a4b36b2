"""What one call of a load run is: the workloads ``shop load --workload`` offers.

A workload turns "make the next call" into a coroutine that always returns a
:class:`~shop.loadgen.stats.CallResult` (failures are outcomes to count, not
exceptions), so the runner stays free of gRPC and of the shop's API. Calls rotate
over the client channels, so ``--channels N`` opens N connections.

The ``mix`` workload imitates a shop front-end rather than hammering one method:
mostly orders, some reads of the orders it placed, some catalog reads. Each order
has a unique idempotency key, so every PlaceOrder really creates an order.
"""

from __future__ import annotations

import abc
import itertools
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import grpc

from shop.loadgen.stats import CallResult
from shop.loadgen.tokens import CustomerTokens, Metadata, NoTokens
from shop.runtime.callscope import ROUTE_TRAILER
from shop.v1 import (
    common_pb2,
    echo_pb2,
    echo_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    inventory_pb2,
)

# Relative weights of the gateway methods in the ``mix`` workload. PlaceOrder
# dominates because it is the call that crosses every hop (gateway -> orders ->
# inventory) and writes; the reads show the shorter paths (ListProducts goes
# gateway -> inventory, GetOrder/ListOrders gateway -> orders).
MIX_WEIGHTS: dict[str, int] = {
    "PlaceOrder": 70,
    "GetOrder": 15,
    "ListOrders": 10,
    "ListProducts": 5,
}

ECHO_PAYLOAD = b"x" * 64  # small: the echo workload measures gRPC itself, not bandwidth
CUSTOMERS = 64  # distinct customer ids per run, so ListOrders pages stay short
MAX_ITEMS_PER_ORDER = 3
MAX_QUANTITY = 3
PLACED_ORDERS_KEPT = 1024  # GetOrder picks among the most recent orders this run placed


class WorkloadError(RuntimeError):
    """The target cannot run this workload (one clear line for the user)."""


def route_from_trailers(metadata: Any) -> str | None:
    """The ``shop-route`` value from trailing metadata, or None (e.g. a bare echo server)."""
    for key, value in metadata or ():
        if key == ROUTE_TRAILER:
            return value if isinstance(value, str) else value.decode()
    return None


def first_call_failed(method: str, error: grpc.aio.AioRpcError) -> str:
    code = error.code()
    hints = {
        grpc.StatusCode.UNIMPLEMENTED: " (the target does not serve it: --workload echo is "
        "for Echo servers, the others for a shop gateway)",
        grpc.StatusCode.UNAUTHENTICATED: " (the gateway needs end users' tokens: pass "
        "--token-key with the issuer's signing key, or --token)",
    }
    hint = hints.get(code, "")
    return f"first {method} call failed: {code.name}: {error.details()}{hint}"


async def invoke(
    method: str, multicallable: Any, request: Any, timeout_s: float, metadata: Metadata = ()
) -> tuple[CallResult, Any]:
    """Makes one unary call; returns its result and the response (None on failure)."""
    call = multicallable(request, timeout=timeout_s, metadata=metadata)
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return CallResult(method, error.code().name), None
    route = route_from_trailers(await call.trailing_metadata())
    return CallResult(method, "OK", route), response


class Workload(abc.ABC):
    name: ClassVar[str]
    help: ClassVar[str]

    def __init__(
        self,
        channels: Sequence[grpc.aio.Channel],
        timeout_s: float,
        seed: int | None = None,
        tokens: CustomerTokens | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.random = random.Random(seed)
        self.tokens: CustomerTokens = tokens or NoTokens()
        self._stubs = itertools.cycle([self.make_stub(channel) for channel in channels])

    @abc.abstractmethod
    def make_stub(self, channel: grpc.aio.Channel) -> Any: ...

    def stub(self) -> Any:
        return next(self._stubs)

    async def prepare(self) -> None:
        """Fetches what calls need before the clock starts (e.g. the catalog's SKUs)."""
        return None

    @abc.abstractmethod
    def next_call(self) -> Awaitable[CallResult]: ...


class _GatewayWorkload(Workload):
    def __init__(
        self,
        channels: Sequence[grpc.aio.Channel],
        timeout_s: float,
        seed: int | None = None,
        tokens: CustomerTokens | None = None,
    ) -> None:
        super().__init__(channels, timeout_s, seed, tokens)
        self.run_id = uuid.uuid4().hex[:8]
        self.skus: list[str] = []
        # (customer, order id): only its customer may read an order back.
        self.placed: deque[tuple[str, str]] = deque(maxlen=PLACED_ORDERS_KEPT)
        self._sequence = itertools.count()

    def make_stub(self, channel: grpc.aio.Channel) -> Any:
        return gateway_pb2_grpc.GatewayStub(channel)

    async def prepare(self) -> None:
        """Learns the catalog's SKUs, which also proves the target is a shop gateway."""
        token = ""
        for _ in range(100):  # bounded: a catalog has a handful of pages
            request = inventory_pb2.ListProductsRequest(page_size=100, page_token=token)
            try:
                response = await self.stub().ListProducts(
                    request, timeout=self.timeout_s, metadata=self.tokens.metadata(self.customer())
                )
            except grpc.aio.AioRpcError as error:
                raise WorkloadError(
                    first_call_failed("shop.v1.Gateway/ListProducts", error)
                ) from None
            self.skus.extend(p.sku for p in response.products)
            token = response.next_page_token
            if not token:
                break
        if not self.skus:
            raise WorkloadError("the catalog is empty: nothing to order")

    def customer(self) -> str:
        return f"load-{self.run_id}-{self.random.randrange(CUSTOMERS)}"

    async def place_order(self) -> CallResult:
        chosen = self.random.sample(
            self.skus, self.random.randint(1, min(MAX_ITEMS_PER_ORDER, len(self.skus)))
        )
        customer = self.customer()
        request = gateway_pb2.PlaceOrderRequest(
            items=[
                common_pb2.OrderItem(sku=sku, quantity=self.random.randint(1, MAX_QUANTITY))
                for sku in chosen
            ],
            idempotency_key=f"load-{self.run_id}-{next(self._sequence)}",
        )
        result, order = await invoke(
            "PlaceOrder",
            self.stub().PlaceOrder,
            request,
            self.timeout_s,
            self.tokens.metadata(customer),
        )
        if order is not None:
            self.placed.append((customer, order.order_id))
        return result

    async def get_order(self) -> CallResult:
        if not self.placed:
            return await self.place_order()  # nothing to read yet
        customer, order_id = self.random.choice(self.placed)
        request = gateway_pb2.GetOrderRequest(order_id=order_id)
        result, _ = await invoke(
            "GetOrder",
            self.stub().GetOrder,
            request,
            self.timeout_s,
            self.tokens.metadata(customer),
        )
        return result

    async def list_orders(self) -> CallResult:
        request = gateway_pb2.ListOrdersRequest(page_size=10)
        result, _ = await invoke(
            "ListOrders",
            self.stub().ListOrders,
            request,
            self.timeout_s,
            self.tokens.metadata(self.customer()),
        )
        return result

    async def list_products(self) -> CallResult:
        request = inventory_pb2.ListProductsRequest()
        result, _ = await invoke(
            "ListProducts",
            self.stub().ListProducts,
            request,
            self.timeout_s,
            self.tokens.metadata(self.customer()),
        )
        return result


class MixWorkload(_GatewayWorkload):
    name = "mix"
    help = "gateway methods weighted like a shop front-end (mostly PlaceOrder)"

    def __init__(
        self,
        channels: Sequence[grpc.aio.Channel],
        timeout_s: float,
        seed: int | None = None,
        tokens: CustomerTokens | None = None,
    ) -> None:
        super().__init__(channels, timeout_s, seed, tokens)
        actions: dict[str, Callable[[], Awaitable[CallResult]]] = {
            "PlaceOrder": self.place_order,
            "GetOrder": self.get_order,
            "ListOrders": self.list_orders,
            "ListProducts": self.list_products,
        }
        self._actions = [actions[method] for method in MIX_WEIGHTS]
        self._weights = list(MIX_WEIGHTS.values())

    def next_call(self) -> Awaitable[CallResult]:
        return self.random.choices(self._actions, self._weights)[0]()


class PlaceWorkload(_GatewayWorkload):
    name = "place"
    help = "PlaceOrder only: every call crosses gateway -> orders -> inventory"

    def next_call(self) -> Awaitable[CallResult]:
        return self.place_order()


class ProductsWorkload(_GatewayWorkload):
    name = "products"
    help = "ListProducts only: gateway -> inventory, read-only"

    def next_call(self) -> Awaitable[CallResult]:
        return self.list_products()


class EchoWorkload(Workload):
    name = "echo"
    help = "shop.v1.Echo/Echo with a 64-byte payload: gRPC itself, no shop logic"

    def make_stub(self, channel: grpc.aio.Channel) -> Any:
        return echo_pb2_grpc.EchoStub(channel)

    async def prepare(self) -> None:
        """One call first: a target without the Echo service fails here, in one line."""
        request = echo_pb2.EchoMessage(payload=ECHO_PAYLOAD)
        try:
            await self.stub().Echo(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            raise WorkloadError(first_call_failed("shop.v1.Echo/Echo", error)) from None

    async def _echo(self) -> CallResult:
        request = echo_pb2.EchoMessage(payload=ECHO_PAYLOAD)
        result, _ = await invoke("Echo", self.stub().Echo, request, self.timeout_s)
        return result

    def next_call(self) -> Awaitable[CallResult]:
        return self._echo()


WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls for cls in (MixWorkload, PlaceWorkload, ProductsWorkload, EchoWorkload)
}
