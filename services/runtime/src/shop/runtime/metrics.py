"""Prometheus metrics with the names existing gRPC dashboards already use.

The ``grpc_server_*`` / ``grpc_client_*`` families follow go-grpc-prometheus (the
names behind most published Grafana gRPC dashboards). Service and pod identity come
from ``shop_instance_info`` (join on ``instance``) rather than from extra labels on
every series, which keeps cardinality the same as the dashboards expect.
"""

from __future__ import annotations

import importlib.metadata
from bisect import bisect_left
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Buckets cover a fast loopback hop (sub-millisecond) up to a client deadline.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_METHOD_LABELS = ("grpc_type", "grpc_service", "grpc_method")

# How often one histogram bucket takes a new exemplar. Prometheus reads a bucket's
# exemplar once per scrape (15 s by default), so one a second loses nothing it would show.
EXEMPLAR_INTERVAL_S = 1.0


class ExemplarThrottle:
    """Admits at most one exemplar per bucket of one latency histogram per interval.

    A bucket keeps only the last exemplar it was given, and prometheus_client's
    exemplar path (label validation, a lock, a new object) is several times the cost
    of a plain observation; giving every sampled call's trace id to its bucket pays
    that for exemplars overwritten before any scrape reads them. The throttle is per
    bucket, not per histogram, so a rare slow call still marks the slow bucket.
    """

    __slots__ = ("_interval_s", "_next_s")

    def __init__(self, interval_s: float = EXEMPLAR_INTERVAL_S) -> None:
        self._interval_s = interval_s
        # One slot per bucket in LATENCY_BUCKETS and one for +Inf.
        self._next_s = [0.0] * (len(LATENCY_BUCKETS) + 1)

    def admit(self, seconds: float, now_s: float) -> bool:
        """Whether an observation of ``seconds`` at monotonic time ``now_s`` may carry
        an exemplar (its bucket has not taken one within the interval)."""
        # prometheus_client puts a value in the first bucket whose bound is >= it.
        bucket = bisect_left(LATENCY_BUCKETS, seconds)
        if now_s < self._next_s[bucket]:
            return False
        self._next_s[bucket] = now_s + self._interval_s
        return True


@dataclass
class RpcMetrics:
    """All metric families of one process, in their own registry (tests run several)."""

    registry: CollectorRegistry
    server_started: Counter
    server_handled: Counter
    server_handling_seconds: Histogram
    server_in_flight: Gauge
    server_retried: Counter
    client_started: Counter
    client_handled: Counter
    client_handling_seconds: Histogram
    instance_info: Gauge

    @classmethod
    def create(cls, service: str, pod: str, mode: str = "local") -> RpcMetrics:
        registry = CollectorRegistry()
        metrics = cls(
            registry=registry,
            server_started=Counter(
                "grpc_server_started",
                "RPCs started on the server.",
                _METHOD_LABELS,
                registry=registry,
            ),
            server_handled=Counter(
                "grpc_server_handled",
                "RPCs completed on the server, regardless of success or failure.",
                (*_METHOD_LABELS, "grpc_code"),
                registry=registry,
            ),
            server_handling_seconds=Histogram(
                "grpc_server_handling_seconds",
                "Time the server took to handle an RPC.",
                _METHOD_LABELS,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            server_in_flight=Gauge(
                "grpc_server_in_flight",
                "RPCs being handled right now.",
                _METHOD_LABELS,
                registry=registry,
            ),
            # Attempts that are retries (the caller's channel set
            # grpc-previous-rpc-attempts): started minus retried is the calls callers
            # made, so a dashboard can show how much retrying multiplies the load.
            server_retried=Counter(
                "grpc_server_retried",
                "RPC attempts that arrived as a retry of an earlier attempt of the same call.",
                _METHOD_LABELS,
                registry=registry,
            ),
            client_started=Counter(
                "grpc_client_started",
                "RPCs started by this process as a client.",
                _METHOD_LABELS,
                registry=registry,
            ),
            client_handled=Counter(
                "grpc_client_handled",
                "RPCs completed by this process as a client.",
                (*_METHOD_LABELS, "grpc_code"),
                registry=registry,
            ),
            client_handling_seconds=Histogram(
                "grpc_client_handling_seconds",
                "Time from starting a client RPC until its status arrived.",
                _METHOD_LABELS,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            instance_info=Gauge(
                "shop_instance_info",
                "Always 1; identifies the service and pod behind this scrape target.",
                ("service", "pod", "version", "mode"),
                registry=registry,
            ),
        )
        metrics.instance_info.labels(service, pod, _runtime_version(), mode).set(1)
        return metrics

    def serve(self, address: str) -> None:
        """Exposes ``/metrics`` over HTTP on ``host:port`` in a daemon thread."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)


def split_method(full_method: str) -> tuple[str, str]:
    """``/shop.v1.Orders/CreateOrder`` -> (``shop.v1.Orders``, ``CreateOrder``)."""
    _, service, method = full_method.split("/", 2)
    return service, method


def code_name(code: grpc.StatusCode | None) -> str:
    return "OK" if code is None else code.name


def _runtime_version() -> str:
    """The installed runtime kit's version: every shop distribution is released together."""
    try:
        return importlib.metadata.version("grpc-shop-runtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
