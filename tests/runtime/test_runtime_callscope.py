"""Per-call scope: the route trailer format and the detached scope for clean-up."""

from __future__ import annotations

import asyncio
import time

import pytest

from shop.runtime.callscope import CallScope, current_scope, detached_scope, format_hop, parse_route


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("", {}),
        ("gateway/gw-0", {"gateway": "gw-0"}),
        (
            "gateway/gateway-0 orders/orders-1 inventory/inventory-2",
            {"gateway": "gateway-0", "orders": "orders-1", "inventory": "inventory-2"},
        ),
        # The first pod named for a service is the one that served this call.
        ("orders/orders-1 orders/orders-2", {"orders": "orders-1"}),
        ("  gateway/a   orders/b  ", {"gateway": "a", "orders": "b"}),
        ("gateway/pod/with/slashes", {"gateway": "pod/with/slashes"}),
        ("nopod", {"nopod": ""}),
    ],
)
def test_parse_route(route: str, expected: dict[str, str]) -> None:
    assert parse_route(route) == expected


def test_format_hop_round_trips_through_parse_route() -> None:
    hops = [format_hop("gateway", "gateway-0"), format_hop("orders", "orders-3")]
    assert parse_route(" ".join(hops)) == {"gateway": "gateway-0", "orders": "orders-3"}


def test_add_route_keeps_order_and_drops_repeats() -> None:
    scope = CallScope(deadline=None)
    scope.add_route("orders/orders-1 inventory/inventory-0")
    scope.add_route("orders/orders-1 inventory/inventory-2")  # a second downstream call
    assert scope.downstream_route == [
        "orders/orders-1",
        "inventory/inventory-0",
        "inventory/inventory-2",
    ]


def test_remaining() -> None:
    assert CallScope(deadline=None).remaining_s() is None
    remaining = CallScope(deadline=time.monotonic() + 2).remaining_s()
    assert remaining is not None and 1.5 < remaining <= 2


async def test_detached_scope_hides_and_restores_the_call_scope() -> None:
    scope = CallScope(deadline=time.monotonic() + 1)
    token = current_scope.set(scope)
    try:
        with detached_scope():
            assert current_scope.get() is None

            # Tasks started inside inherit the detached view too.
            async def seen() -> CallScope | None:
                return current_scope.get()

            assert await asyncio.create_task(seen()) is None
        assert current_scope.get() is scope
        with pytest.raises(RuntimeError), detached_scope():
            raise RuntimeError("clean-up failed")
        assert current_scope.get() is scope
    finally:
        current_scope.reset(token)
