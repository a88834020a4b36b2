"""Reading the ``shop-route`` trailer: present, absent, bytes, several hops."""

from __future__ import annotations

import grpc

from shop.loadgen.workload import route_from_trailers
from shop.runtime.callscope import ROUTE_TRAILER, parse_route


def test_parse_route_maps_service_to_pod() -> None:
    route = "gateway/gateway-0 orders/orders-2 inventory/inventory-1"
    assert parse_route(route) == {
        "gateway": "gateway-0",
        "orders": "orders-2",
        "inventory": "inventory-1",
    }


def test_parse_route_keeps_first_pod_of_a_service() -> None:
    assert parse_route("gateway/g-0 inventory/i-1 inventory/i-2") == {
        "gateway": "g-0",
        "inventory": "i-1",
    }


def test_route_from_aio_metadata() -> None:
    metadata = grpc.aio.Metadata(("other", "x"), (ROUTE_TRAILER, "echo/echo-0"))
    assert route_from_trailers(metadata) == "echo/echo-0"


def test_route_from_plain_pairs_and_bytes() -> None:
    assert route_from_trailers(((ROUTE_TRAILER, b"orders/orders-1"),)) == "orders/orders-1"


def test_absent_route_is_none() -> None:
    assert route_from_trailers(grpc.aio.Metadata()) is None
    assert route_from_trailers(None) is None
    assert route_from_trailers((("grpc-status-details-bin", b"\x00"),)) is None
