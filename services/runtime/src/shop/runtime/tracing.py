"""OpenTelemetry tracing set up from the standard ``OTEL_*`` variables.

Spans are exported over OTLP/gRPC in batches. Tracing is off when
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``; the interceptors then
skip span work entirely instead of creating non-recording spans, which is what
keeps the telemetry-off benchmark honest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from shop.runtime.config import ConfigError
from shop.runtime.sampling import FastSampling, PresetIdGenerator, sampler_from_env


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "false").strip().lower() == "true":
        return False
    return env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "otlp":
        protocol = environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        )
        if protocol != "grpc":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not valid: expected 'grpc'"
            )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "console":
        return ConsoleSpanExporter()
    raise ConfigError(f"OTEL_TRACES_EXPORTER={kind!r} is not valid: expected otlp, console or none")


class Tracing:
    """Owns the tracer provider of one process; ``shutdown`` flushes pending spans."""

    def __init__(self, service: str, pod: str, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = tracing_requested(env)
        self._provider: TracerProvider | None = None
        # The decision for unsampled calls without the SDK (shop.runtime.sampling).
        self.fast: FastSampling | None = None
        if not self.enabled:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            return
        resource = Resource.create(
            {"service.name": env.get("OTEL_SERVICE_NAME", service), "service.instance.id": pod}
        )
        sampler, self.fast = sampler_from_env(env)
        provider = TracerProvider(
            resource=resource, sampler=sampler, id_generator=PresetIdGenerator()
        )
        provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
        self._provider = provider
        self.tracer = provider.get_tracer("shop.runtime")

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.force_flush(timeout_millis=5000)
            self._provider.shutdown()
