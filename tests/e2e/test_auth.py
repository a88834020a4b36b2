"""Authentication and authorization through a real local cluster (one process per
service, configured as ``shop up`` configures them) and real service processes.

- the gateway refuses calls without a good end user's token with UNAUTHENTICATED
  and a one-line reason; health and reflection need no token anywhere;
- a customer's orders are invisible to every other customer (NOT_FOUND, exactly as
  for an order that does not exist);
- on their own ports, orders and inventory admit only the callers their rules name:
  no credential is UNAUTHENTICATED, an authentic caller the method does not admit
  is PERMISSION_DENIED, and SetStock needs an administrator;
- a service that cannot enforce its rules does not start: one line names the
  variable that is missing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.api.services import ORDERS as ORDERS_SERVICE
from shop.credentials import TokenIssuer
from shop.local.cluster import LocalCluster
from shop.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
)

from ..support.auth import caller_metadata
from ..support.catalog import stock_of
from ..support.clusters import ClusterFactory
from ..support.pods import PodEnv, run_service_module

Metadata = tuple[tuple[str, str], ...]
NO_METADATA: Metadata = ()
CALL_TIMEOUT_S = 30
EXIT_CONFIG_ERROR = 2
CONFIRMED = common_pb2.ORDER_STATUS_CONFIRMED
CANCELLED = common_pb2.ORDER_STATUS_CANCELLED


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    return module_cluster_factory(gateway=1, orders=1, inventory=1)


def address(cluster: LocalCluster, service: str) -> str:
    (replica,) = cluster.replicas_of(service)
    return replica.grpc_addr


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def unique(prefix: str) -> str:
    """A name no other test in the module's shared cluster uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def refused(call: Callable[..., Any], request: Any, metadata: Metadata) -> grpc.RpcError:
    """The error ``call`` ends with; a server-streaming call fails at its first read."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        if hasattr(result, "__next__"):
            next(result)
    return caught.value


def assert_refused(error: grpc.RpcError, code: grpc.StatusCode, *phrases: str) -> None:
    """``error`` has ``code`` and a short one-line message with ``phrases``: what is
    wrong, never a stack or a library's internals."""
    details = error.details() or ""
    assert error.code() == code, (error.code(), details)
    for phrase in phrases:
        assert phrase in details, details
    assert "\n" not in details and len(details) < 200, details
    assert "Traceback" not in details and 'File "' not in details, details


# --- the gateway: end users' bearer tokens ----------------------------------------------


def another_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _claims(cluster: LocalCluster, **changes: Any) -> dict[str, Any]:
    issuer = cluster.credentials.issuer()
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
    }
    return claims | changes


# Each: (what the caller sends, given the cluster) and what the message must say.
BAD_CREDENTIALS: dict[str, tuple[Callable[[LocalCluster], Metadata], str]] = {
    "no-token": (lambda c: NO_METADATA, "needs a bearer token"),
    "not-bearer": (
        lambda c: (("authorization", "Basic bWFsbG9yeTpzZWNyZXQ="),),
        "authorization must be 'Bearer <token>'",
    ),
    "malformed": (lambda c: bearer("not-a-jwt"), "bearer token is malformed"),
    "another-key": (
        lambda c: bearer(TokenIssuer(another_key()).token("mallory")),
        "bearer token is signed by an unknown key",
    ),
    "another-key-claiming-the-issuers-kid": (
        lambda c: bearer(
            jwt.encode(
                _claims(c),
                another_key(),
                algorithm="ES256",
                headers={"kid": c.credentials.issuer().key_id},
            )
        ),
        "bearer token signature does not verify",
    ),
    "expired": (
        lambda c: bearer(c.credentials.issuer().token("alice", lifetime_s=-3600)),
        "bearer token has expired",
    ),
    "wrong-audience": (
        lambda c: bearer(
            TokenIssuer.from_file(c.credentials.issuer_key, audience="another-api").token("alice")
        ),
        "bearer token is not for this service",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_the_gateway_refuses_a_call_without_a_good_token(cluster: LocalCluster, case: str) -> None:
    credentials, reason = BAD_CREDENTIALS[case]
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        error = refused(
            gateway.ListProducts, inventory_pb2.ListProductsRequest(), credentials(cluster)
        )
    assert_refused(error, grpc.StatusCode.UNAUTHENTICATED, reason)


GATEWAY_CALLS: dict[str, Any] = {
    "PlaceOrder": gateway_pb2.PlaceOrderRequest(
        items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)]
    ),
    "GetOrder": gateway_pb2.GetOrderRequest(order_id=str(uuid.uuid4())),
    "ListOrders": gateway_pb2.ListOrdersRequest(),
    "CancelOrder": gateway_pb2.CancelOrderRequest(order_id=str(uuid.uuid4())),
    "ListProducts": inventory_pb2.ListProductsRequest(),
    "WatchOrder": gateway_pb2.WatchOrderRequest(order_id=str(uuid.uuid4())),
}


def test_every_gateway_method_needs_a_token(cluster: LocalCluster) -> None:
    methods = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods_by_name
    assert set(GATEWAY_CALLS) == set(methods)
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        for method, request in GATEWAY_CALLS.items():
            error = refused(getattr(gateway, method), request, NO_METADATA)
            assert_refused(error, grpc.StatusCode.UNAUTHENTICATED, "needs a bearer token")


@pytest.mark.parametrize("service", ["gateway", "orders", "inventory"])
def test_health_and_reflection_need_no_token(cluster: LocalCluster, service: str) -> None:
    full_name = {"gateway": "shop.v1.Gateway", "orders": ORDERS_SERVICE,
                 "inventory": INVENTORY_SERVICE}[service]  # fmt: skip
    with grpc.insecure_channel(address(cluster, service)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", full_name):
            reply = health.Check(
                health_pb2.HealthCheckRequest(service=name), timeout=CALL_TIMEOUT_S
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert full_name in listed and "grpc.health.v1.Health" in listed


# --- customers see their own orders only ------------------------------------------------


def test_a_customer_cannot_see_or_touch_another_customers_order(cluster: LocalCluster) -> None:
    alice, bob = unique("alice"), unique("bob")
    as_alice, as_bob = cluster.end_user_metadata(alice), cluster.end_user_metadata(bob)
    item = common_pb2.OrderItem(sku="ESP-001", quantity=1)
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)

        def place(user: Metadata) -> Any:
            return gateway.PlaceOrder(
                gateway_pb2.PlaceOrderRequest(items=[item]), metadata=user, timeout=CALL_TIMEOUT_S
            )

        alices, bobs = place(as_alice), place(as_bob)
        assert (alices.customer_id, bobs.customer_id) == (alice, bob)
        unknown = str(uuid.uuid4())

        # Bob gets exactly what he gets for an order that does not exist.
        for method in ("GetOrder", "CancelOrder", "WatchOrder"):
            make = getattr(gateway_pb2, f"{method}Request")
            call = getattr(gateway, method)
            foreign = refused(call, make(order_id=alices.order_id), as_bob)
            missing = refused(call, make(order_id=unknown), as_bob)
            assert_refused(foreign, grpc.StatusCode.NOT_FOUND, alices.order_id)
            assert (foreign.details() or "").replace(alices.order_id, "<id>") == (
                missing.details() or ""
            ).replace(unknown, "<id>")

        def listed(user: Metadata) -> list[str]:
            reply = gateway.ListOrders(
                gateway_pb2.ListOrdersRequest(page_size=100), metadata=user, timeout=CALL_TIMEOUT_S
            )
            assert not reply.next_page_token
            return [o.order_id for o in reply.orders]

        assert listed(as_bob) == [bobs.order_id]
        assert listed(as_alice) == [alices.order_id]

        # Bob's cancel changed nothing: Alice's order is hers to read, watch and cancel.
        got = gateway.GetOrder(
            gateway_pb2.GetOrderRequest(order_id=alices.order_id),
            metadata=as_alice,
            timeout=CALL_TIMEOUT_S,
        )
        assert got == alices and got.status == CONFIRMED
        watch = gateway.WatchOrder(
            gateway_pb2.WatchOrderRequest(order_id=alices.order_id),
            metadata=as_alice,
            timeout=CALL_TIMEOUT_S,
        )
        assert next(watch).order.status == CONFIRMED
        watch.cancel()
        cancelled = gateway.CancelOrder(
            gateway_pb2.CancelOrderRequest(order_id=alices.order_id),
            metadata=as_alice,
            timeout=CALL_TIMEOUT_S,
        )
        assert (cancelled.order_id, cancelled.status) == (alices.order_id, CANCELLED)


# --- inventory's own port -------------------------------------------------------------


def _stock(inventory: inventory_pb2_grpc.InventoryStub, cluster: LocalCluster, sku: str) -> int:
    reply = inventory.ListProducts(
        inventory_pb2.ListProductsRequest(page_size=200),
        metadata=caller_metadata(cluster.credentials, "orders", INVENTORY_SERVICE),
        timeout=CALL_TIMEOUT_S,
    )
    return stock_of(reply, sku)


def test_set_stock_needs_an_administrator(cluster: LocalCluster) -> None:
    sku = unique("AUTH").upper()
    customer = cluster.end_user_metadata("customer")
    with grpc.insecure_channel(address(cluster, "inventory")) as channel:
        inventory = inventory_pb2_grpc.InventoryStub(channel)

        def request(stock: int) -> inventory_pb2.SetStockRequest:
            return inventory_pb2.SetStockRequest(sku=sku, stock=stock, price_cents=100)

        assert_refused(
            refused(inventory.SetStock, request(7), NO_METADATA),
            grpc.StatusCode.UNAUTHENTICATED,
            "needs a bearer token",
        )
        assert_refused(
            refused(inventory.SetStock, request(7), customer),
            grpc.StatusCode.PERMISSION_DENIED,
            "needs a token with the shop.admin scope",
        )
        product = inventory.SetStock(
            request(5),
            metadata=cluster.end_user_metadata("stock-admin", admin=True),
            timeout=CALL_TIMEOUT_S,
        )
        assert (product.sku, product.stock) == (sku, 5)
        # A refused SetStock changes nothing.
        refused(inventory.SetStock, request(0), customer)
        assert _stock(inventory, cluster, sku) == 5


def test_reservations_are_orders_business_only(cluster: LocalCluster) -> None:
    reserve = inventory_pb2.ReserveRequest(
        reservation_id=unique("auth-r"), items=[common_pb2.OrderItem(sku="MUG-003", quantity=1)]
    )
    release = inventory_pb2.ReleaseRequest(reservation_id=unique("auth-r"))
    gateway_token = caller_metadata(cluster.credentials, "gateway", INVENTORY_SERVICE)
    with grpc.insecure_channel(address(cluster, "inventory")) as channel:
        inventory = inventory_pb2_grpc.InventoryStub(channel)
        before = _stock(inventory, cluster, "MUG-003")
        for method, request in (("Reserve", reserve), ("Release", release)):
            call = getattr(inventory, method)
            full = f"/{INVENTORY_SERVICE}/{method}"
            assert_refused(
                refused(call, request, NO_METADATA),
                grpc.StatusCode.UNAUTHENTICATED,
                f"{full} is internal",
            )
            # Not even an administrator's bearer token stands in for a caller token.
            assert_refused(
                refused(call, request, cluster.end_user_metadata("stock-admin", admin=True)),
                grpc.StatusCode.UNAUTHENTICATED,
                f"{full} is internal",
            )
            assert_refused(
                refused(call, request, gateway_token),
                grpc.StatusCode.PERMISSION_DENIED,
                f"gateway may not call {full}",
            )
        assert _stock(inventory, cluster, "MUG-003") == before
        # The gateway may read the catalog, as its rule says.
        listed = inventory.ListProducts(
            inventory_pb2.ListProductsRequest(page_size=5),
            metadata=gateway_token,
            timeout=CALL_TIMEOUT_S,
        )
        assert listed.products


# --- orders' own port -----------------------------------------------------------------

ORDERS_CALLS: dict[str, Any] = {
    "CreateOrder": orders_pb2.CreateOrderRequest(
        idempotency_key="auth-direct",
        customer_id="mallory",
        items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)],
    ),
    "GetOrder": orders_pb2.OrderRef(order_id=str(uuid.uuid4()), customer_id="mallory"),
    "ListOrders": orders_pb2.ListCustomerOrdersRequest(customer_id="mallory"),
    "CancelOrder": orders_pb2.OrderRef(order_id=str(uuid.uuid4()), customer_id="mallory"),
    "WatchOrder": orders_pb2.OrderRef(order_id=str(uuid.uuid4()), customer_id="mallory"),
}


def test_only_the_gateway_may_call_orders(cluster: LocalCluster) -> None:
    methods = orders_pb2.DESCRIPTOR.services_by_name["Orders"].methods_by_name
    assert set(ORDERS_CALLS) == set(methods)
    credentials = cluster.credentials
    itself = caller_metadata(credentials, "orders", ORDERS_SERVICE)
    # The gateway's token for inventory, replayed to orders.
    replayed = caller_metadata(credentials, "gateway", INVENTORY_SERVICE)
    with grpc.insecure_channel(address(cluster, "orders")) as channel:
        orders = orders_pb2_grpc.OrdersStub(channel)
        for method, request in ORDERS_CALLS.items():
            call = getattr(orders, method)
            full = f"/{ORDERS_SERVICE}/{method}"
            for metadata in (NO_METADATA, cluster.end_user_metadata("mallory")):
                assert_refused(
                    refused(call, request, metadata),
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{full} is internal",
                )
            assert_refused(
                refused(call, request, replayed),
                grpc.StatusCode.UNAUTHENTICATED,
                "caller token does not verify",
            )
            assert_refused(
                refused(call, request, itself),
                grpc.StatusCode.PERMISSION_DENIED,
                f"orders may not call {full}",
            )
        # Nothing was placed by those calls; the gateway's own token is admitted.
        reply = orders.ListOrders(
            ORDERS_CALLS["ListOrders"],
            metadata=caller_metadata(credentials, "gateway", ORDERS_SERVICE),
            timeout=CALL_TIMEOUT_S,
        )
        assert list(reply.orders) == []


# --- a service that cannot enforce its rules does not start -------------------------


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("gateway", "SHOP_AUTH_JWKS"),
        ("gateway", "SHOP_INTERNAL_KEYS_DIR"),
        ("orders", "SHOP_INTERNAL_KEYS_DIR"),
        ("inventory", "SHOP_INTERNAL_KEYS_DIR"),
    ],
)
def test_a_missing_credential_setting_stops_the_start_with_one_line(
    service: str, variable: str, pod_env: PodEnv
) -> None:
    env = pod_env()
    del env[variable]
    result = run_service_module(f"shop.{service}", env)
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"{service}: configuration error: {variable} is required"), lines
    assert result.stdout == ""


def test_an_unreadable_jwks_file_stops_the_start_with_one_line(pod_env: PodEnv) -> None:
    result = run_service_module("shop.gateway", pod_env(SHOP_AUTH_JWKS="/nonexistent/jwks.json"))
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "SHOP_AUTH_JWKS='/nonexistent/jwks.json': cannot read it" in lines[0]
