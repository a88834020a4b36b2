"""JSON log lines: one object per line, with the trace and span of the current call."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shop.runtime.logs import JsonFormatter, configure_logging


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("orders", "orders-1"))
    logger = logging.getLogger("test.shop.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_line_inside_a_span_carries_its_trace_and_span_ids(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("shop.v1.Orders/CreateOrder") as span:
        logger.warning("release failed", extra={"order_id": "o-1", "code": "UNAVAILABLE"})
    logger.info("after the call")
    inside, outside = _lines(stream)
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["msg"] == "release failed"
    assert inside["level"] == "warning"
    assert (inside["service"], inside["pod"]) == ("orders", "orders-1")
    assert (inside["order_id"], inside["code"]) == ("o-1", "UNAVAILABLE")
    assert "trace_id" not in outside and "span_id" not in outside


def test_line_is_one_json_object_even_with_a_traceback(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logger.exception("round failed", extra={"odd": object()})
    assert len(stream.getvalue().splitlines()) == 1
    (entry,) = _lines(stream)
    assert "ValueError: multi\\nline" in json.dumps(entry["exc"])
    assert str(entry["odd"]).startswith("<object object")
    assert str(entry["ts"]).endswith("+00:00")


def test_configure_logging_replaces_handlers_and_sets_level() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("gateway", "gateway-0", "warning")
        assert root.level == logging.WARNING
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert logging.getLogger("asyncio").level == logging.WARNING
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
