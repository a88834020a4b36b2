"""Trace ids on the latency histograms (exemplars), as Prometheus scrapes them.

With tracing on, a sampled call leaves its trace id on the histogram bucket its
duration fell into, server side and client side (at most one a second per bucket),
so a Grafana latency panel can open the trace behind a slow bucket.
prometheus_client writes exemplars only in the OpenMetrics format, which Prometheus
asks for; the test scrapes the replicas the same way and also lets a real
Prometheus store them. Replicas are real processes on loopback; spans go over
OTLP/gRPC to a sink in this process.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from shop.bench.otlp_sink import OtlpSink
from shop.local.cluster import LocalCluster
from shop.local.prometheus import start_prometheus
from shop.runtime.metrics import LATENCY_BUCKETS, ExemplarThrottle
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from ..support.clusters import ClusterFactory

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
SERVER_BUCKET = "grpc_server_handling_seconds_bucket"
CLIENT_BUCKET = "grpc_client_handling_seconds_bucket"
# (service scraped, histogram, grpc_method) that one PlaceOrder passes through.
HOPS = [
    ("gateway", SERVER_BUCKET, "PlaceOrder"),
    ("gateway", CLIENT_BUCKET, "CreateOrder"),
    ("orders", SERVER_BUCKET, "CreateOrder"),
    ("orders", CLIENT_BUCKET, "Reserve"),
    ("inventory", SERVER_BUCKET, "Reserve"),
]

# Loopback requests must not go through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as running:
        yield running


def _place_order(cluster: LocalCluster, trace_id: str, sampled: bool) -> None:
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        order = gateway_pb2_grpc.GatewayStub(channel).PlaceOrder(
            gateway_pb2.PlaceOrderRequest(items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)]),
            metadata=[*cluster.end_user_metadata("exemplars"), ("traceparent", traceparent)],
            timeout=30,
        )
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED


def _scrape(cluster: LocalCluster, service: str) -> list[Sample]:
    """The replica's /metrics as Prometheus asks for it (OpenMetrics), parsed."""
    (replica,) = cluster.replicas_of(service)
    request = urllib.request.Request(
        f"http://{replica.metrics_addr}/metrics", headers={"Accept": OPENMETRICS}
    )
    with _HTTP.open(request, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        text = reply.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _buckets(samples: list[Sample], name: str, method: str) -> list[Sample]:
    return [s for s in samples if s.name == name and s.labels.get("grpc_method") == method]


def _exemplar_traces(samples: list[Sample]) -> set[str]:
    return {s.exemplar.labels["trace_id"] for s in samples if s.exemplar is not None}


def test_a_sampled_call_leaves_its_trace_id_on_every_hops_latency_bucket(
    cluster_factory: ClusterFactory, sink: OtlpSink, tmp_path: Path
) -> None:
    cluster = cluster_factory(
        gateway=1,
        orders=1,
        inventory=1,
        extra_env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    sampled, unsampled = secrets.token_hex(16), secrets.token_hex(16)
    _place_order(cluster, sampled, sampled=True)
    # The caller decided not to sample this one: no span reaches a backend, so its
    # id must not become a link (and must not replace the sampled one).
    _place_order(cluster, unsampled, sampled=False)

    scrapes = {service: _scrape(cluster, service) for service in ("gateway", "orders", "inventory")}
    for service, histogram, method in HOPS:
        buckets = _buckets(scrapes[service], histogram, method)
        assert buckets, f"{service}: no {histogram} for {method}"
        with_exemplar = [s for s in buckets if s.exemplar is not None]
        assert [s.exemplar.labels for s in with_exemplar if s.exemplar] == [
            {"trace_id": sampled}
        ], f"{service} {histogram} {method}: {with_exemplar}"
        (bucket,) = with_exemplar
        assert bucket.exemplar is not None
        # The exemplar holds the call's duration and sits on the bucket it fell into.
        assert 0 < bucket.exemplar.value <= float(bucket.labels["le"])
        assert bucket.exemplar.timestamp is not None
    for service, samples in scrapes.items():
        assert unsampled not in _exemplar_traces(samples), service
    # Tracing really ran: the sampled call's spans were exported.
    assert sink.spans.wait_for(5, ("gateway", "orders", "inventory"), timeout_s=30) >= 5

    # A real Prometheus negotiates OpenMetrics on its own and keeps the exemplar.
    prometheus = start_prometheus(tmp_path / "prometheus", cluster.metrics_targets())
    try:
        deadline = time.monotonic() + 30
        found: set[str] = set()
        while sampled not in found:
            assert time.monotonic() < deadline, f"Prometheus stored no exemplar {sampled}"
            time.sleep(0.25)
            found = _stored_exemplar_traces(prometheus.url, SERVER_BUCKET)
    finally:
        prometheus.stop()


def _stored_exemplar_traces(url: str, metric: str) -> set[str]:
    now = time.time()
    query = urllib.parse.urlencode(
        {"query": metric, "start": f"{now - 300:.3f}", "end": f"{now:.3f}"}
    )
    with _HTTP.open(f"{url}/api/v1/query_exemplars?{query}", timeout=10) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return {
        exemplar["labels"]["trace_id"]
        for series in body["data"]
        for exemplar in series["exemplars"]
    }


def test_with_tracing_off_the_histograms_carry_no_exemplars(
    cluster_factory: ClusterFactory,
) -> None:
    # The cluster's default: OTEL_TRACES_EXPORTER=none, the interceptors skip spans.
    cluster = cluster_factory(gateway=1, orders=1, inventory=1)
    # Even a caller that asks for sampling gets no exemplar: there is no trace to open.
    _place_order(cluster, secrets.token_hex(16), sampled=True)
    for service, histogram, method in HOPS:
        samples = _scrape(cluster, service)
        buckets = _buckets(samples, histogram, method)
        assert buckets and max(s.value for s in buckets) >= 1, f"{service}: call not counted"
        assert _exemplar_traces(samples) == set(), service


def test_a_bucket_takes_one_exemplar_per_interval_and_each_bucket_its_own() -> None:
    throttle = ExemplarThrottle(interval_s=1.0)
    fast, slow = LATENCY_BUCKETS[0] / 2, LATENCY_BUCKETS[-1] * 2  # first bucket, +Inf
    assert throttle.admit(fast, now_s=100.0)
    # The same bucket within the interval: its exemplar would be overwritten unread.
    assert not throttle.admit(fast, now_s=100.5)
    assert not throttle.admit(LATENCY_BUCKETS[0], now_s=100.9)  # the bound itself
    # A slow call's bucket is not held back by the fast ones.
    assert throttle.admit(slow, now_s=100.5)
    assert throttle.admit(LATENCY_BUCKETS[0] * 1.5, now_s=100.5)  # the next bucket
    assert throttle.admit(fast, now_s=101.0)
