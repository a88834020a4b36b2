"""What the chart's ``mode=istio`` asks of the mesh, as one record the lab's sidecars obey.

The chart says it with Istio objects: a DestinationRule per service (balancing
algorithm, slow start, outlier detection), a PeerAuthentication (mutual TLS), an
AuthorizationPolicy per called service (who may call which method), and no
VirtualService, so Istio's default retry policy applies. istiod turns those into Envoy
configuration; :mod:`shop.lab.sidecar_resources` does the same from :data:`CHART_MESH`.
``tests/deploy/test_chart_mesh_lab.py`` renders the chart and checks that both say the
same things, so the chart stays the source of truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shop.lab.mesh_ca import principal


@dataclass(frozen=True)
class OutlierDetection:
    """DestinationRule ``outlierDetection``: eject a pod after consecutive failures."""

    consecutive_errors: int = 5
    interval_s: float = 10.0
    base_ejection_s: float = 30.0
    max_ejection_percent: int = 50


@dataclass(frozen=True)
class RetryPolicy:
    """Istio's route retries when no VirtualService sets any: two more attempts, on
    another pod, for failures that cannot have run the call, or that the server said
    are safe to retry (UNAVAILABLE, and CANCELLED from a stopping server)."""

    attempts: int = 2
    retry_on: tuple[str, ...] = (
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    )
    retriable_status_codes: tuple[int, ...] = (503,)
    # Picks a host other than the ones already tried, up to this many times.
    host_selection_attempts: int = 5


@dataclass(frozen=True)
class AccessRule:
    """An AuthorizationPolicy ALLOW rule: these service accounts may call these paths
    (an Istio path: exact, or a prefix ending in ``*``)."""

    callers: tuple[str, ...]
    paths: tuple[str, ...]

    @property
    def principals(self) -> tuple[str, ...]:
        return tuple(principal(caller) for caller in self.callers)


# What any mesh peer may call on every service: health says only SERVING or not.
OPEN_PATHS = ("/grpc.health.v1.Health/*",)


@dataclass(frozen=True)
class MeshPolicy:
    """The mesh settings of the chart's ``mode=istio``."""

    load_balancer: str = "LEAST_REQUEST"
    # The chart's slow start is 30 s; the lab's runs last seconds, so its pods warm up
    # over a shorter window, as its headless mode ages connections faster than the
    # chart (the scale-up window must see a new pod reach its share).
    warmup_s: float = 4.0
    outlier: OutlierDetection = field(default_factory=OutlierDetection)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # PeerAuthentication: STRICT refuses plain-text callers on the service port.
    mtls_mode: str = "STRICT"
    # Per called service, who may call what (the gateway has no policy: it is the edge).
    access: Mapping[str, tuple[AccessRule, ...]] = field(
        default_factory=lambda: {
            "orders": (AccessRule(("gateway",), ("/shop.v1.Orders/*",)),),
            "inventory": (
                AccessRule(
                    ("orders",), ("/shop.v1.Inventory/Reserve", "/shop.v1.Inventory/Release")
                ),
                AccessRule(("gateway", "orders"), ("/shop.v1.Inventory/ListProducts",)),
            ),
        }
    )
    open_paths: tuple[str, ...] = OPEN_PATHS


CHART_MESH = MeshPolicy()
