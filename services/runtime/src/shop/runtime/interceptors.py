"""One server and one client interceptor doing all per-call work in a single pass.

Stacking separate interceptors (metrics, tracing, deadline, route) costs a Python
frame and an awaitable wrapper each on every call; the OpenTelemetry gRPC
instrumentation alone cost about a third of the throughput on our machines. These
two do metrics, spans, deadline propagation and pod-route reporting together. With
tracing on, a sampled call's trace id rides on its latency bucket as an exemplar (at
most one a second per bucket: see ``ExemplarThrottle``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id
from prometheus_client import Counter

from shop.runtime.auth.internal import CALLER_TOKEN_HEADER
from shop.runtime.auth.policy import AccessPolicy, Check
from shop.runtime.callscope import ROUTE_TRAILER, CallScope, current_scope, format_hop
from shop.runtime.decoding import Undecodable, tolerant
from shop.runtime.errors import abort_with
from shop.runtime.failures import Failures
from shop.runtime.metrics import ExemplarThrottle, RpcMetrics, code_name, split_method
from shop.runtime.orca import LoadReporter
from shop.runtime.sampling import FastSampling, SpanInUse

_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}

# Health checks and reflection are infrastructure: keep them out of spans (not metrics),
# load reports and fault injection.
_INFRASTRUCTURE_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

# Set by gRPC on every retried attempt of a call (gRFC A6), absent on the first.
PREVIOUS_ATTEMPTS_HEADER = "grpc-previous-rpc-attempts"

# The parent context of a call that brought no trace context and no baggage.
_EMPTY_CONTEXT = Context()


def trace_exemplar(span: trace.Span) -> dict[str, str] | None:
    """``{"trace_id": <32 hex>}`` for a sampled span, else None.

    A histogram bucket keeps the last exemplar it was given; Prometheus stores it
    with the sample, and Grafana draws it as a dot that opens the trace. Only a
    sampled span reached the trace backend, so only its id is worth a link.
    """
    context = span.get_span_context()
    if not context.trace_flags.sampled:
        return None
    return {"trace_id": format_trace_id(context.trace_id)}


def _metadata_dict(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


class _HandledByCode:
    """One method's children of a ``*_handled`` counter, one per status code, each
    looked up the first time its code is seen (a labelled lookup costs a lock and a
    dict walk; a method ends with few codes)."""

    __slots__ = ("_children", "_family", "_labels")

    def __init__(self, family: Counter, labels: tuple[str, str, str]) -> None:
        self._family = family
        self._labels = labels
        self._children: dict[grpc.StatusCode | None, Any] = {}

    def __call__(self, code: grpc.StatusCode | None) -> Any:
        """The counter child for ``code`` (None: OK)."""
        child = self._children.get(code)
        if child is None:
            child = self._family.labels(*self._labels, code_name(code))
            self._children[code] = child
        return child


class _MethodTelemetry:
    """Everything the server records for one method, resolved once.

    Looking up labelled metric children costs a lock and a dict walk each; doing it
    once per method instead of five times per call is measurable on a 2-core box.
    """

    def __init__(
        self,
        metrics: RpcMetrics,
        labels: tuple[str, str, str],
        tracer: trace.Tracer | None,
        check: Check | None = None,
        load: LoadReporter | None = None,
    ) -> None:
        self.full_method = f"/{labels[1]}/{labels[2]}"
        # Where answered calls are counted and their load report comes from; None: the
        # method's answers carry none (streams, infrastructure, reports off).
        self.load = load
        # Who may call (shop.runtime.auth); None for an open method.
        self.check = check
        self.span_name = self.full_method[1:]
        self.tracer = tracer
        self.started = metrics.server_started.labels(*labels)
        self.retried = metrics.server_retried.labels(*labels)
        self.in_flight = metrics.server_in_flight.labels(*labels)
        self.seconds = metrics.server_handling_seconds.labels(*labels)
        self.exemplars = ExemplarThrottle()
        self.handled = _HandledByCode(metrics.server_handled, labels)

    def load_trailers(self) -> tuple[tuple[str, bytes], ...]:
        """The load report to send with an answer, as trailers (none when off or not
        measured yet)."""
        return () if self.load is None else self.load.trailers()


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Metrics, SERVER spans, the incoming deadline, the route trailer and the mapping
    of every failure to a status (``failures`` decides, ``errors.abort_with`` sends it),
    for every call."""

    def __init__(
        self,
        service: str,
        pod: str,
        metrics: RpcMetrics,
        tracer: trace.Tracer | None,
        access: AccessPolicy | None = None,
        fast: FastSampling | None = None,
        load: LoadReporter | None = None,
        fault: grpc.StatusCode | None = None,
    ) -> None:
        """``load``: ORCA reports on unary answers (``shop.runtime.orca``); ``fault``:
        every call but infrastructure ends with this status (fault injection)."""
        self._hop = format_hop(service, pod)
        self._load = load
        self._fault = fault
        self._access = access
        self._metrics = metrics
        self._tracer = tracer
        # Unsampled calls get their span without the SDK (shop.runtime.sampling).
        self._fast = fast
        self._failures = Failures(service)
        # Wrapped handlers per method: registered handlers never change, so each is
        # wrapped once rather than on every call.
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        full_method: str = details.method
        wrapped = self._wrapped.get(full_method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None:
            return None
        wrapped = self._wrap(handler, full_method)
        self._wrapped[full_method] = wrapped
        return wrapped

    def _wrap(self, handler: Any, full_method: str) -> Any:
        grpc_type = _TYPES[(handler.request_streaming, handler.response_streaming)]
        service, method = split_method(full_method)
        infrastructure = full_method.startswith(_INFRASTRUCTURE_PREFIXES)
        tracer = None if infrastructure else self._tracer
        check = None if self._access is None else self._access.checker(full_method)
        # A stream's calls per second say little about load: only unary answers report.
        load = None if infrastructure or grpc_type != "unary" else self._load
        labels = (grpc_type, service, method)
        telemetry = _MethodTelemetry(self._metrics, labels, tracer, check, load)
        if self._fault is not None and not infrastructure:
            # Swapped in here rather than tested on every call: no cost when off.
            fail = _failing_behavior(self._fault, telemetry)
            handler = handler._replace(
                unary_unary=handler.unary_unary and fail, unary_stream=handler.unary_stream and fail
            )
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, telemetry),
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, telemetry),
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # client/bidi streaming: not used by the shop

    def _open(
        self, context: grpc.aio.ServicerContext, telemetry: _MethodTelemetry, metadata: Any
    ) -> tuple[CallScope, AbstractContextManager[Any], trace.Span | None]:
        """Counts the call, opens its scope and, with tracing, its span: returns the
        scope, the context manager that makes the span current, and the span if it
        records (a sampled call)."""
        # One pass over the headers for everything this call needs from them.
        retried = baggage = False
        traceparent: str | None = None
        tracestate: str | None = None
        for key, value in metadata or ():
            if key == PREVIOUS_ATTEMPTS_HEADER:
                retried = True
            elif key == "traceparent":
                traceparent = value
            elif key == "tracestate":
                tracestate = value
            elif key == "baggage":
                baggage = True
        telemetry.started.inc()
        telemetry.in_flight.inc()
        if retried:
            telemetry.retried.inc()
        remaining = context.time_remaining()
        scope = CallScope(deadline=None if remaining is None else time.monotonic() + remaining)
        current_scope.set(scope)
        if telemetry.tracer is None:
            return scope, nullcontext(), None
        root_trace_id = None
        if self._fast is not None:
            decision = self._fast.decide(traceparent, tracestate)
            if isinstance(decision, SpanInUse):
                return scope, decision, None  # not sampled
            root_trace_id = decision
        if traceparent is None and not baggage:
            parent = _EMPTY_CONTEXT  # nothing to extract: a root with no baggage
        else:
            parent = propagate.extract(_metadata_dict(metadata))
        span = FastSampling.start_root(
            telemetry.tracer,
            root_trace_id,
            telemetry.span_name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.method": telemetry.full_method},
        )
        return scope, SpanInUse(span, end_on_exit=True), span if span.is_recording() else None

    def _finish(
        self,
        context: grpc.aio.ServicerContext,
        scope: CallScope,
        code: grpc.StatusCode | None,
        telemetry: _MethodTelemetry,
        started: float,
        span: trace.Span | None,
    ) -> None:
        """Records the call's outcome; ``span`` is the call's span if it records."""
        ok = code in (None, grpc.StatusCode.OK)
        if telemetry.load is not None:
            telemetry.load.answered(code)
        if ok:
            route = " ".join([self._hop, *scope.downstream_route])
            # (A failed call got its load report with its abort: trailers set after an
            # abort are not sent.)
            context.set_trailing_metadata(((ROUTE_TRAILER, route), *telemetry.load_trailers()))
        telemetry.handled(None if ok else code).inc()
        now = time.perf_counter()
        if span is not None and telemetry.exemplars.admit(now - started, now):
            telemetry.seconds.observe(now - started, trace_exemplar(span))
        else:
            telemetry.seconds.observe(now - started)
        telemetry.in_flight.dec()
        if span is not None:
            # Required by the OpenTelemetry RPC conventions, also on success.
            span.set_attribute("rpc.grpc.status_code", 0 if ok or code is None else code.value[0])
            if not ok:
                span.set_status(Status(StatusCode.ERROR, code_name(code)))

    def _wrap_unary(
        self, behavior: Callable[..., Any], telemetry: _MethodTelemetry
    ) -> Callable[..., Any]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            metadata = context.invocation_metadata()
            scope, span_cm, span = self._open(context, telemetry, metadata)
            code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
            with span_cm:
                try:
                    try:
                        if telemetry.check is not None:
                            scope.principal = await telemetry.check(_metadata_dict(metadata))
                        if type(request) is Undecodable:
                            raise request.error()
                        response = await behavior(request, context)
                    except grpc.aio.AbortError:
                        raise  # the handler chose its status itself
                    except Exception as error:
                        await abort_with(
                            context,
                            self._failures.answer(error, telemetry.full_method),
                            telemetry.load_trailers(),
                        )
                    code = context.code()
                    return response
                except BaseException as exc:
                    code = context.code() or _code_for_exception(exc)
                    raise
                finally:
                    self._finish(context, scope, code, telemetry, started, span)

        return handle

    def _wrap_stream(
        self, behavior: Callable[..., Any], telemetry: _MethodTelemetry
    ) -> Callable[..., AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            metadata = context.invocation_metadata()
            scope, span_cm, span = self._open(context, telemetry, metadata)
            code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
            with span_cm:
                try:
                    try:
                        if telemetry.check is not None:
                            scope.principal = await telemetry.check(_metadata_dict(metadata))
                        if type(request) is Undecodable:
                            raise request.error()
                        result = behavior(request, context)
                        if inspect.isasyncgen(result):
                            async for item in result:
                                yield item
                        else:  # a handler that writes with context.write() (Health.Watch)
                            await result
                    except grpc.aio.AbortError:
                        raise
                    except Exception as error:
                        await abort_with(
                            context,
                            self._failures.answer(error, telemetry.full_method),
                            telemetry.load_trailers(),
                        )
                    code = context.code()
                except BaseException as exc:
                    code = context.code() or _code_for_exception(exc)
                    raise
                finally:
                    self._finish(context, scope, code, telemetry, started, span)

        return handle


def _failing_behavior(code: grpc.StatusCode, telemetry: _MethodTelemetry) -> Callable[..., Any]:
    """A handler that ends every call with ``code`` at once (unary or stream alike: the
    stream wrapper awaits a handler that is no generator), its load report attached."""
    message = f"fault injected on this pod (SHOP_FAULT_STATUS={code.name})"

    async def fail(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message, telemetry.load_trailers())

    return fail


def _code_for_exception(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


# Strong references to the small tasks that record finished streams (asyncio keeps
# only weak ones).
_pending_records: set[asyncio.Task[None]] = set()


class _ClientMethod:
    """What the client records for one method, resolved once (as :class:`_MethodTelemetry`
    does for the server)."""

    def __init__(self, metrics: RpcMetrics, labels: tuple[str, str, str]) -> None:
        self.service = labels[1]
        self.full_method = f"/{labels[1]}/{labels[2]}"
        self.span_name = self.full_method[1:]
        self.started = metrics.client_started.labels(*labels)
        self.seconds = metrics.client_handling_seconds.labels(*labels)
        self.exemplars = ExemplarThrottle()
        self.handled = _HandledByCode(metrics.client_handled, labels)


class _ClientBase:
    _grpc_type = "unary"

    def __init__(
        self,
        metrics: RpcMetrics,
        tracer: trace.Tracer | None,
        default_timeout_s: float,
        caller_token: Callable[[], str] | None = None,
        fast: FastSampling | None = None,
    ) -> None:
        self._metrics = metrics
        self._tracer = tracer
        self._fast = fast
        self._default_timeout_s = default_timeout_s or None
        # This service's identity for the callee (shop.runtime.auth.internal).
        self._caller_token = caller_token
        # Per method as the channel names it (str or bytes): a channel calls few.
        self._methods: dict[str | bytes, _ClientMethod] = {}

    def _details(self, details: Any, span: trace.Span | None) -> Any:
        timeout = details.timeout
        scope = current_scope.get()
        remaining = scope.remaining_s() if scope is not None else None
        if remaining is not None:
            # Never give a downstream call more time than our caller gave us.
            timeout = max(remaining, 0.001) if timeout is None else min(timeout, remaining)
        elif timeout is None:
            timeout = self._default_timeout_s
        metadata = list(details.metadata or ())
        if self._caller_token is not None:
            metadata.append((CALLER_TOKEN_HEADER, self._caller_token()))
        if span is not None:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            metadata.extend(carrier.items())
        return details._replace(timeout=timeout, metadata=grpc.aio.Metadata(*metadata))

    def _begin(self, details: Any) -> tuple[_ClientMethod, float, trace.Span | None, Any]:
        """Counts the start, opens the CLIENT span and returns the details to send."""
        method = self._methods.get(details.method)
        if method is None:
            method = _ClientMethod(self._metrics, _method_labels(details, self._grpc_type))
            self._methods[details.method] = method
        method.started.inc()
        span = self._start_span(method)
        return method, time.perf_counter(), span, self._details(details, span)

    def _start_span(self, method: _ClientMethod) -> trace.Span | None:
        if self._tracer is None:
            return None
        if self._fast is not None:
            # Under an unsampled span a parent-based sampler samples no child: send
            # that span's context downstream as it is, unsampled, with no new span.
            unsampled = self._fast.unsampled_current()
            if unsampled is not None:
                return unsampled
        return self._tracer.start_span(
            method.span_name,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": method.full_method},
        )

    def _record(
        self,
        method: _ClientMethod,
        code: grpc.StatusCode,
        started: float,
        span: trace.Span | None,
        trailers: Any,
    ) -> None:
        method.handled(code).inc()
        now = time.perf_counter()
        exemplar = None
        if span is not None and span.is_recording() and method.exemplars.admit(now - started, now):
            exemplar = trace_exemplar(span)
        method.seconds.observe(now - started, exemplar)
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
        scope = current_scope.get()
        if scope is not None and code == grpc.StatusCode.UNAVAILABLE:
            # Lets the server name the callee if this error reaches its client.
            scope.unavailable_dependency = method.service
        if scope is not None and trailers:
            for key, value in trailers:
                if key == ROUTE_TRAILER:
                    scope.add_route(value)


def _method_labels(details: Any, grpc_type: str) -> tuple[str, str, str]:
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    service, name = split_method(method)
    return grpc_type, service, name


class UnaryClientInterceptor(_ClientBase, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        method, started, span, new_details = self._begin(details)
        call = await continuation(new_details, request)
        try:
            await call
        except grpc.aio.AioRpcError:
            pass  # the caller sees the error when it awaits the call itself
        except BaseException:
            self._record(method, grpc.StatusCode.CANCELLED, started, span, None)
            raise
        self._record(method, await call.code(), started, span, await call.trailing_metadata())
        return call


class StreamClientInterceptor(_ClientBase, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    _grpc_type = "server_stream"

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        method, started, span, new_details = self._begin(details)
        call = await continuation(new_details, request)

        def on_done(done_call: Any) -> None:
            async def record() -> None:
                self._record(method, await done_call.code(), started, span, None)

            task = asyncio.get_running_loop().create_task(record())
            _pending_records.add(task)
            task.add_done_callback(_pending_records.discard)

        call.add_done_callback(on_done)
        return call
