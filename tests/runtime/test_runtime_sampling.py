"""The fast path for unsampled calls decides exactly as the SDK's sampler would, keeps
the configured ratio, and still gives every call a current span with its trace id."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision as SdkDecision,
)
from opentelemetry.sdk.trace.sampling import (
    ParentBasedTraceIdRatio,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shop.runtime.config import ConfigError
from shop.runtime.sampling import FastSampling, PresetIdGenerator, SpanInUse, sampler_from_env

RATIO = 0.1
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_ID = 0xB7AD6B7169203331


def _fast() -> FastSampling:
    _, fast = sampler_from_env(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(RATIO)}
    )
    assert fast is not None
    return fast


def _traceparent(flags: str, trace_id: int = TRACE_ID) -> str:
    return f"00-{trace_id:032x}-{PARENT_SPAN_ID:016x}-{flags}"


def test_roots_are_decided_as_the_sdks_sampler_decides_and_keep_the_ratio() -> None:
    fast, sdk = _fast(), TraceIdRatioBased(RATIO)
    sampled = 0
    runs = 20_000
    for _ in range(runs):
        decision = fast.decide(None, None)
        if isinstance(decision, SpanInUse):
            trace_id = decision.span.get_span_context().trace_id
        else:
            assert isinstance(decision, int)
            trace_id = decision
            sampled += 1
        expected = sdk.should_sample(None, trace_id, "call").decision
        assert (expected == SdkDecision.RECORD_AND_SAMPLE) == (not isinstance(decision, SpanInUse))
    assert 0.085 < sampled / runs < 0.115


def test_a_sampled_root_reaches_the_sdk_with_the_trace_id_drawn_for_it() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ParentBasedTraceIdRatio(RATIO), id_generator=PresetIdGenerator()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    fast = _fast()
    roots = [fast.decide(None, None) for _ in range(400)]
    sampled = [d for d in roots if isinstance(d, int)]
    assert sampled
    for trace_id in sampled:
        span = FastSampling.start_root(tracer, trace_id, "root")
        span.end()
    assert [s.context.trace_id for s in exporter.get_finished_spans()] == sampled
    # Without a preset the generator draws its own ids.
    other = FastSampling.start_root(tracer, None, "root")
    assert other.get_span_context().trace_id not in sampled


def test_an_unsampled_parent_gives_a_current_span_of_its_trace() -> None:
    decision = _fast().decide(_traceparent("00"), None)
    assert isinstance(decision, SpanInUse)
    with decision:
        context = trace.get_current_span().get_span_context()
        assert context.trace_id == TRACE_ID
        assert context.span_id not in (PARENT_SPAN_ID, 0)
        assert not context.trace_flags.sampled
        # A call made under it goes out unsampled, as its own context.
        assert FastSampling.unsampled_current() is decision.span
    assert not trace.get_current_span().get_span_context().is_valid


def test_tracestate_travels_with_an_unsampled_parent() -> None:
    decision = _fast().decide(_traceparent("00"), "vendor=value")
    assert isinstance(decision, SpanInUse)
    state = decision.span.get_span_context().trace_state
    assert state.get("vendor") == "value"


@pytest.mark.parametrize(
    "traceparent",
    [
        _traceparent("01"),  # sampled parent: the SDK records a child
        _traceparent("00", trace_id=0),  # invalid ids: the SDK decides as for garbage
        "not a traceparent",
        "01-" + "a" * 32 + "-" + "b" * 16 + "-00",  # unknown version
    ],
)
def test_what_the_fast_path_leaves_to_the_sdk(traceparent: str) -> None:
    assert _fast().decide(traceparent, None) is None


@pytest.mark.parametrize("flags", [f"{value:02x}" for value in range(256)])
def test_a_parents_flags_are_read_as_the_sdk_reads_them(flags: str) -> None:
    """The fast path tests the sampled bit on the header's text; the SDK's propagator
    and sampler decide from the parsed flags byte. Every byte must agree."""
    traceparent = _traceparent(flags)
    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    sdk = ParentBasedTraceIdRatio(RATIO).should_sample(parent, TRACE_ID, "call").decision
    decision = _fast().decide(traceparent, None)
    assert (decision is None) == (sdk == SdkDecision.RECORD_AND_SAMPLE)
    if isinstance(decision, SpanInUse):
        assert decision.span.get_span_context().trace_flags == int(flags, 16)


def test_span_in_use_ends_its_span_only_when_asked() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    kept, ended = tracer.start_span("kept"), tracer.start_span("ended")
    with SpanInUse(kept):
        assert trace.get_current_span() is kept
    with pytest.raises(RuntimeError), SpanInUse(ended, end_on_exit=True):
        raise RuntimeError("the handler failed")
    assert [span.name for span in exporter.get_finished_spans()] == ["ended"]
    assert not trace.get_current_span().get_span_context().is_valid


def test_no_unsampled_span_is_current_outside_an_unsampled_call() -> None:
    assert FastSampling.unsampled_current() is None
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(1.0))
    with provider.get_tracer("test").start_as_current_span("sampled"):
        assert FastSampling.unsampled_current() is None


@pytest.mark.parametrize(
    ("name", "bound"),
    [
        ("parentbased_always_on", TraceIdRatioBased.TRACE_ID_LIMIT + 1),
        ("parentbased_always_off", 0),
        ("parentbased_traceidratio", TraceIdRatioBased.get_bound_for_rate(1.0)),
    ],
)
def test_parent_based_samplers_have_a_fast_path(name: str, bound: int) -> None:
    _, fast = sampler_from_env({"OTEL_TRACES_SAMPLER": name})
    assert fast is not None and fast.root_bound == bound


@pytest.mark.parametrize("name", ["always_on", "always_off", "traceidratio"])
def test_other_samplers_leave_everything_to_the_sdk(name: str) -> None:
    _, fast = sampler_from_env({"OTEL_TRACES_SAMPLER": name})
    assert fast is None


def test_a_bad_sampler_or_ratio_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER="):
        sampler_from_env({"OTEL_TRACES_SAMPLER": "sometimes"})
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG="):
        sampler_from_env(
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}
        )
