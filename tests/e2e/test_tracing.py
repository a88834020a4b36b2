"""One trace across gateway -> orders -> inventory, received over real OTLP/gRPC.

The test runs its own minimal OTLP trace receiver and points the replicas at it with
the standard ``OTEL_*`` variables, as a collector would be configured in a pod. The
spans must form one trace with the right parent/child edges across the three
processes, and log lines written during a call must carry that trace's id.
"""

from __future__ import annotations

import itertools
import json
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from shop.local.cluster import LocalCluster
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from ..support.clusters import ClusterFactory

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    instance: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    status_code: int
    attributes: dict[str, Any]


def _attribute_value(value: AnyValue) -> Any:
    """A span attribute's value: whichever field of its AnyValue is set (str, int...)."""
    field = value.WhichOneof("value")
    assert field is not None, f"an attribute without a value: {value}"
    return getattr(value, field)


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span; a condition lets tests wait for the ones they need."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {kv.key: _attribute_value(kv.value) for kv in span.attributes}
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            instance=resource.get("service.instance.id", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            status_code=span.status.code,
                            attributes=attributes,
                        )
                    )
        with self._changed:
            self._spans.extend(received)
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 30.0
    ) -> list[ReceivedSpan]:
        with self._changed:
            if not self._changed.wait_for(lambda: done(list(self._spans)), timeout_s):
                names = sorted({(s.service, s.name) for s in self._spans})
                raise AssertionError(f"spans not received within {timeout_s}s; have {names}")
            return list(self._spans)


@pytest.fixture
def receiver() -> Iterator[tuple[TraceReceiver, int]]:
    # A thread-pool server: it keeps answering while the test blocks on processes.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    receiver = TraceReceiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(None)


def _traced_cluster(cluster_factory: ClusterFactory, port: int, **replicas: int) -> LocalCluster:
    return cluster_factory(
        **replicas,
        extra_env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )


def _order() -> gateway_pb2.PlaceOrderRequest:
    return gateway_pb2.PlaceOrderRequest(items=[common_pb2.OrderItem(sku="ESP-001", quantity=1)])


def _metadata(cluster: LocalCluster, traceparent: str | None) -> list[tuple[str, str]]:
    """Customer ``tracer``'s bearer token, and the caller's trace context if given."""
    metadata = list(cluster.end_user_metadata("tracer"))
    if traceparent is not None:
        metadata.append(("traceparent", traceparent))
    return metadata


# What orders logs when a saga step cannot release its reservation (placement.py).
RELEASE_FAILED = "release failed; a retry or the reconciler will finish it"


def _one(spans: list[ReceivedSpan], service: str, kind: int, name: str) -> ReceivedSpan:
    matching = [s for s in spans if (s.service, s.kind, s.name) == (service, kind, name)]
    assert len(matching) == 1, f"{service} {name}: {matching}"
    return matching[0]


# The call chain of PlaceOrder as (service, kind, span name), parent first.
CHAIN = [
    ("gateway", SERVER, "shop.v1.Gateway/PlaceOrder"),
    ("gateway", CLIENT, "shop.v1.Orders/CreateOrder"),
    ("orders", SERVER, "shop.v1.Orders/CreateOrder"),
    ("orders", CLIENT, "shop.v1.Inventory/Reserve"),
    ("inventory", SERVER, "shop.v1.Inventory/Reserve"),
]


def _has_chain(trace_id: str | None) -> Callable[[list[ReceivedSpan]], bool]:
    def done(spans: list[ReceivedSpan]) -> bool:
        present = {(s.service, s.kind, s.name) for s in spans if s.trace_id == trace_id}
        return all(link in present for link in CHAIN)

    return done


@pytest.mark.parametrize("caller_traceparent", [True, False], ids=["traceparent", "no-parent"])
def test_place_order_is_one_trace_across_three_services(
    receiver: tuple[TraceReceiver, int], cluster_factory: ClusterFactory, caller_traceparent: bool
) -> None:
    spans_in, port = receiver
    cluster = _traced_cluster(cluster_factory, port, gateway=1, orders=2, inventory=2)
    trace_id = secrets.token_hex(16)
    caller_span = secrets.token_hex(8)
    metadata = _metadata(cluster, f"00-{trace_id}-{caller_span}-01" if caller_traceparent else None)
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        order = gateway_pb2_grpc.GatewayStub(channel).PlaceOrder(
            _order(), metadata=metadata, timeout=30
        )
    assert order.status == common_pb2.ORDER_STATUS_CONFIRMED

    if not caller_traceparent:
        # The gateway starts the trace: find it by its root span.
        roots = spans_in.wait_for(
            lambda spans: any(s.name == CHAIN[0][2] and not s.parent_span_id for s in spans)
        )
        trace_id = next(s.trace_id for s in roots if s.name == CHAIN[0][2])
    spans = [s for s in spans_in.wait_for(_has_chain(trace_id)) if s.trace_id == trace_id]

    chain = [_one(spans, *link) for link in CHAIN]
    expected_root_parent = caller_span if caller_traceparent else ""
    assert chain[0].parent_span_id == expected_root_parent
    for parent, child in itertools.pairwise(chain):
        assert child.parent_span_id == parent.span_id, f"{child.name} under {parent.name}"
    for span in chain:
        assert span.status_code != trace_pb2.Status.STATUS_CODE_ERROR
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.grpc.status_code"] == 0
        # Each span comes from the replica that really handled the hop.
        assert span.instance.startswith(f"{span.service}-")
    # Health checks and reflection stay out of traces.
    assert not [s for s in spans_in.wait_for(lambda _: True) if "grpc.health" in s.name]


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "unsampled"])
def test_log_lines_written_during_a_call_carry_its_trace(
    receiver: tuple[TraceReceiver, int], cluster_factory: ClusterFactory, sampled: bool
) -> None:
    """With inventory gone, orders logs 'release failed' inside the CreateOrder call;
    that line must name the caller's trace and the orders span it was written in.

    Unsampled too: no span of the trace is exported, yet the trace id reaches orders
    through the gateway (shop.runtime.sampling: neither hop asks the SDK for a span)."""
    spans_in, port = receiver
    cluster = _traced_cluster(cluster_factory, port, gateway=1, orders=1, inventory=1)
    (inventory,) = cluster.replicas_of("inventory")
    cluster.signal_replica(inventory, signal.SIGTERM)
    assert cluster.wait_exit(inventory, 30) == 0

    trace_id = secrets.token_hex(16)
    flags = "01" if sampled else "00"
    metadata = _metadata(cluster, f"00-{trace_id}-{secrets.token_hex(8)}-{flags}")
    with (
        grpc.insecure_channel(cluster.gateway_target) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        gateway_pb2_grpc.GatewayStub(channel).PlaceOrder(_order(), metadata=metadata, timeout=60)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    (orders,) = cluster.replicas_of("orders")
    deadline = time.monotonic() + 30
    while True:
        lines = [
            json.loads(line)
            for line in orders.log_path.read_text().splitlines()
            if line.startswith("{")
        ]
        in_call = [line for line in lines if line["msg"] == RELEASE_FAILED]
        if in_call:
            break
        assert time.monotonic() < deadline, f"no in-call log line in {lines}"
        time.sleep(0.1)
    assert {line["trace_id"] for line in in_call} == {trace_id}
    if not sampled:
        # Spans are exported every 100 ms: wait for a later trace's, then look.
        marker = secrets.token_hex(16)
        with grpc.insecure_channel(cluster.gateway_target) as channel, pytest.raises(grpc.RpcError):
            gateway_pb2_grpc.GatewayStub(channel).PlaceOrder(
                _order(), metadata=_metadata(cluster, f"00-{marker}-{secrets.token_hex(8)}-01"),
                timeout=60,
            )  # fmt: skip
        exported = spans_in.wait_for(lambda spans: any(s.trace_id == marker for s in spans))
        assert not [s for s in exported if s.trace_id == trace_id]
        return
    spans = spans_in.wait_for(
        lambda spans: (
            {line["span_id"] for line in in_call}
            <= {s.span_id for s in spans if s.trace_id == trace_id}
        )
    )
    logged_in = {s.span_id: s for s in spans if s.trace_id == trace_id}
    for line in in_call:
        span = logged_in[line["span_id"]]
        assert (span.service, span.kind, span.name) == ("orders", SERVER, CHAIN[2][2])
        assert span.status_code == trace_pb2.Status.STATUS_CODE_ERROR
        assert line["pod"] == "orders-0"
