"""A call that will not be sampled, decided before OpenTelemetry's SDK is asked.

With the chart's sampler (``parentbased_traceidratio`` at 10%) nine calls in ten are
not sampled, yet the SDK makes each of them pay for most of a span: extracting the
context from every header, the sampler's call, a span object, a context manager. A
call still needs a current span when it is not sampled: logs and INTERNAL errors carry
its trace id, and downstream calls must learn that the trace is not sampled.

:class:`FastSampling` makes the same decision the SDK would, from the ``traceparent``
header alone, and for an unsampled call builds only what is needed: a non-recording
span with the trace id (the parent's, or a new one) and a new span id, made current.
Everything else goes to the SDK unchanged:

- a sampled parent: the SDK records a child span;
- no parent (a root): the trace id is drawn here, as the SDK's random id generator
  draws it, and the trace-id-ratio rule decides (``trace_id & (2**64 - 1) < bound``).
  A root that rule samples goes to the SDK with that very trace id
  (:class:`PresetIdGenerator`), so the SDK's sampler reaches the same decision and the
  sampled share stays the configured ratio.

Only parent-based samplers are decided here (``parentbased_traceidratio``,
``parentbased_always_on``, ``parentbased_always_off``: the SDK's default and the
chart's); with any other sampler everything goes to the SDK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from shop.runtime.config import ConfigError

_LOW_64 = (1 << 64) - 1
# version 00: trace id, parent span id, flags; both ids must not be all zeros.
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ALL_ON = TraceIdRatioBased.TRACE_ID_LIMIT + 1
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NO_TRACE_STATE = TraceState()

# The trace id the fast path drew for a root it decided to sample; read by the SDK's
# id generator while that root's span is being created.
_preset_trace_id: ContextVar[int | None] = ContextVar("shop_preset_trace_id", default=None)


class PresetIdGenerator(RandomIdGenerator):
    """The SDK's random ids, except the trace id of a root the fast path drew."""

    def generate_trace_id(self) -> int:
        preset = _preset_trace_id.get()
        return preset if preset is not None else super().generate_trace_id()


class SpanInUse:
    """Makes ``span`` the current span for a ``with`` block and, if ``end_on_exit``,
    ends it there: what ``trace.use_span`` does with exception recording off, without
    its generator-based context manager (a frame and a generator per call)."""

    __slots__ = ("_end_on_exit", "_token", "span")

    def __init__(self, span: trace.Span, end_on_exit: bool = False) -> None:
        self.span = span
        self._end_on_exit = end_on_exit
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *exc: object) -> None:
        try:
            if self._end_on_exit:
                self.span.end()
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]


# What the fast path decided for an incoming call: not sampled (a SpanInUse that makes
# the call's non-recording span current), a sampled root (the trace id the SDK must
# give it), or None: a sampled parent, or a header the SDK would not accept either,
# so the SDK decides. No wrapper object: one decision is made for every call.
Decision = SpanInUse | int | None

# Ids are drawn as the SDK draws them, so a decision made here sees the same ids.
_IDS = RandomIdGenerator()


class FastSampling:
    """The sampling decision of a parent-based sampler whose root sampler samples a
    trace id iff its low 64 bits are below ``root_bound``."""

    def __init__(self, root_bound: int) -> None:
        self.root_bound = root_bound

    def decide(self, traceparent: object, tracestate: object) -> Decision:
        """The decision for a call whose ``traceparent`` and ``tracestate`` headers
        are these (None when absent; the server interceptor reads them in its one
        pass over the call's metadata)."""
        if not isinstance(traceparent, str):
            trace_id = _IDS.generate_trace_id()
            if trace_id & _LOW_64 < self.root_bound:
                return trace_id
            return SpanInUse(_unsampled(trace_id, _NOT_SAMPLED, None))
        match = _TRACEPARENT.match(traceparent)
        if match is None:
            return None
        trace_hex, span_hex, flags_hex = match.groups()
        if flags_hex[1] in "13579bdf":  # the sampled flag (bit 0) is set
            return None
        trace_id = int(trace_hex, 16)
        if trace_id == 0 or int(span_hex, 16) == 0:
            return None  # not a context the SDK would accept either
        state = TraceState.from_header([tracestate]) if isinstance(tracestate, str) else None
        return SpanInUse(_unsampled(trace_id, TraceFlags(int(flags_hex, 16)), state))

    @staticmethod
    def unsampled_current() -> trace.Span | None:
        """The current span if it belongs to an unsampled trace: a call made under it
        would not be sampled either, so its context can go downstream as it is."""
        span = trace.get_current_span()
        context = span.get_span_context()
        if context.is_valid and not context.trace_flags.sampled and not span.is_recording():
            return span
        return None

    @staticmethod
    def start_root(tracer: trace.Tracer, trace_id: int | None, name: str, **kwargs: Any) -> Any:
        """``tracer.start_span(name, ...)``, the span given ``trace_id`` if not None."""
        token = _preset_trace_id.set(trace_id)
        try:
            return tracer.start_span(name, **kwargs)
        finally:
            _preset_trace_id.reset(token)


def _unsampled(trace_id: int, flags: TraceFlags, state: TraceState | None) -> trace.Span:
    span_id = _IDS.generate_span_id()
    return NonRecordingSpan(SpanContext(trace_id, span_id, False, flags, state or _NO_TRACE_STATE))


def sampler_from_env(environ: Mapping[str, str]) -> tuple[Sampler, FastSampling | None]:
    """The sampler ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` name, and its
    fast path where it has one; a name or ratio that is not valid is a ConfigError."""
    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if name in ("parentbased_traceidratio", "traceidratio"):
        try:
            rate = float(argument) if argument else 1.0
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={argument!r} is not valid: a ratio 0..1")
        if name == "traceidratio":
            return TraceIdRatioBased(rate), None
        return ParentBasedTraceIdRatio(rate), FastSampling(
            TraceIdRatioBased.get_bound_for_rate(rate)
        )
    if name == "parentbased_always_on":
        return DEFAULT_ON, FastSampling(_ALL_ON)
    if name == "parentbased_always_off":
        return DEFAULT_OFF, FastSampling(0)
    if name == "always_off":
        return ALWAYS_OFF, None
    if name == "always_on":
        return ALWAYS_ON, None
    raise ConfigError(
        f"OTEL_TRACES_SAMPLER={name!r} is not valid: expected parentbased_traceidratio, "
        "traceidratio, parentbased_always_on, parentbased_always_off, always_on or always_off"
    )
