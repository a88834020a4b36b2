"""A minimal OTLP/gRPC trace receiver that only counts what it is sent.

The benchmark needs spans to go somewhere real (an exporter with no receiver
retries and backs off, which would measure the wrong thing) and needs proof that
tracing ran. A collector would add a process competing for the same cores; this
sink decodes each export and counts spans per ``service.name``, nothing more.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.resource.v1 import resource_pb2

UNKNOWN_SERVICE = "(unknown)"


def service_name(resource: resource_pb2.Resource) -> str:
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return attribute.value.string_value
    return UNKNOWN_SERVICE


class SpanCounter(trace_service_pb2_grpc.TraceServiceServicer):
    """The TraceService handler: a thread-safe count of spans per service name."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._changed = threading.Condition()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            received[service_name(resource_spans.resource)] += sum(
                len(scope_spans.spans) for scope_spans in resource_spans.scope_spans
            )
        with self._changed:
            self._counts.update(received)
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def counts(self) -> dict[str, int]:
        with self._changed:
            return dict(self._counts)

    def total(self, services: tuple[str, ...] | None = None) -> int:
        counts = self.counts()
        return sum(n for name, n in counts.items() if services is None or name in services)

    def wait_for(self, at_least: int, services: tuple[str, ...] | None, timeout_s: float) -> int:
        """Blocks until ``services`` sent ``at_least`` spans (or the timeout); returns the count."""
        with self._changed:
            self._changed.wait_for(lambda: self.total(services) >= at_least, timeout_s)
        return self.total(services)


class OtlpSink:
    """Runs a :class:`SpanCounter` on a loopback port of its own, in this process's threads.

    Use as a context manager; ``endpoint`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.spans = SpanCounter()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self.spans, self._server)
        port = self._server.add_insecure_port(f"{host}:0")
        self.endpoint = f"http://{host}:{port}"

    def __enter__(self) -> OtlpSink:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.stop(grace=1.0).wait()
