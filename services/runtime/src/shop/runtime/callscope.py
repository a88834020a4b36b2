"""Per-call state shared between the server and client interceptors.

The server interceptor opens a :class:`CallScope` for every incoming call and puts
it in a context variable; downstream calls made by the handler run in the same
asyncio context, so the client interceptor finds the scope there. Through it the
incoming deadline reaches every downstream call, and the pods that served the
downstream calls travel back up in the ``shop-route`` trailer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

ROUTE_TRAILER = "shop-route"


@dataclass
class CallScope:
    # time.monotonic() at which the incoming call's deadline expires, or None.
    deadline: float | None
    downstream_route: list[str] = field(default_factory=list)
    # Who is calling, once the access check has verified it (a shop.runtime.auth
    # Principal; typed loosely here so this module depends on nothing).
    principal: object | None = None
    # The downstream service (full name) whose last call here ended UNAVAILABLE.
    unavailable_dependency: str | None = None

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def add_route(self, route: str) -> None:
        for hop in route.split():
            if hop not in self.downstream_route:
                self.downstream_route.append(hop)


current_scope: ContextVar[CallScope | None] = ContextVar("shop_call_scope", default=None)


def format_hop(service: str, pod: str) -> str:
    return f"{service}/{pod}"


def parse_route(route: str) -> dict[str, str]:
    """``"gateway/gw-0 orders/orders-1"`` -> ``{"gateway": "gw-0", "orders": "orders-1"}``."""
    hops: dict[str, str] = {}
    for hop in route.split():
        service, _, pod = hop.partition("/")
        hops.setdefault(service, pod)
    return hops


@contextmanager
def detached_scope() -> Iterator[None]:
    """Downstream calls inside get their own deadline, not the incoming call's.

    For clean-up that must still happen after the caller's deadline has passed
    (releasing a reservation whose outcome is unknown).
    """
    token = current_scope.set(None)
    try:
        yield
    finally:
        current_scope.reset(token)
