"""What a client sees when a call fails, decided in one place for every service.

- A client mistake (a :class:`~shop.runtime.errors.ShopError` such as
  INVALID_ARGUMENT) is answered as raised: its code, its ``google.rpc`` details.
- A dependency outage (the database refuses connections, drops them, is shut down,
  locked or times out connecting) is UNAVAILABLE with a message naming the
  dependency, never the driver's text (hosts, ports, SQL, bound parameters). The
  caller's channel may retry it.
- A downstream call's status passes up with its code and details. An UNAVAILABLE
  or CANCELLED (a replica that stopped before its handler took the call) passed up
  tells our caller not to retry (``grpc-retry-pushback-ms: -1``): the channel that
  met it already retried it, and a retry at every hop would multiply attempts
  (4 x 4 x ...).
- Anything else is a bug: INTERNAL with a generic message carrying the trace id and
  an error id, logged with its stack under that error id.

Logging is rate-limited per kind of failure: during an outage every call fails the
same way, and a traceback per call buries everything else (and costs CPU exactly
when the service is struggling). The first occurrence is logged in full, then at most
one summary line per interval says how many more there were.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace

from shop.runtime.callscope import current_scope
from shop.runtime.errors import Internal, ShopError, Unavailable, status_details_of

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0


@dataclass
class _Window:
    started: float
    level: int
    message: str
    extra: dict[str, Any]
    suppressed: int = 0
    flush: asyncio.TimerHandle | None = field(default=None, repr=False)


class RateLimitedLog:
    """Logs the first of a kind of event in full, then counts repeats.

    Events with the same key inside ``interval_s`` of the first are not logged; at the
    end of the interval one summary line carries their number (``suppressed``). A
    kind that then stays quiet for a whole interval is forgotten, so its next
    occurrence is logged in full again.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1000,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._max_kinds = max_kinds
        self._windows: dict[object, _Window] = {}

    def log(
        self,
        key: object,
        level: int,
        message: str,
        *,
        exc_info: BaseException | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Logs or counts one event; True if it was logged in full."""
        now = self._clock()
        window = self._windows.get(key)
        while window is not None and now - window.started >= self._interval_s:
            self._close(key)  # no event loop closed it on time: do it now
            window = self._windows.get(key)
        if window is not None:
            window.suppressed += 1
            self._schedule_close(key, window)
            return False
        if len(self._windows) >= self._max_kinds:
            self._windows.pop(next(iter(self._windows)))
        self._windows[key] = _Window(now, level, message, dict(extra or {}))
        self._logger.log(level, message, exc_info=exc_info, extra=extra)
        return True

    def _schedule_close(self, key: object, window: _Window) -> None:
        if window.flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # closed lazily by the next event of this kind
        delay = max(0.0, window.started + self._interval_s - self._clock())
        window.flush = loop.call_later(delay, self._close, key)

    def _close(self, key: object) -> None:
        """Ends the window of ``key``: a summary line if anything was suppressed (and
        the next window begins, the storm may go on), else the kind is forgotten."""
        window = self._windows.pop(key, None)
        if window is None:
            return
        if window.flush is not None:
            window.flush.cancel()
        if window.suppressed == 0:
            return
        self._logger.log(
            window.level,
            f"{window.message} (repeated)",
            extra={
                **window.extra,
                "suppressed": window.suppressed,
                "interval_s": self._interval_s,
            },
        )
        self._windows[key] = _Window(
            window.started + self._interval_s, window.level, window.message, window.extra
        )


def error_id(error: BaseException, salt: str = "") -> str:
    """The same id for the same bug: the exception type and the line that raised it.

    Every occurrence of a bug gets this id, so the one line logged with the stack (and
    the summary lines after it) can be found from any client's error message.
    """
    frame = _innermost(error)
    where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    return hashlib.sha256(f"{kind}@{where}{salt}".encode()).hexdigest()[:12]


def _innermost(error: BaseException) -> Any:
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _network_error(error: BaseException) -> bool:
    """A connection refused, reset, timed out or a name that does not resolve."""
    return isinstance(error, ConnectionError | TimeoutError | socket.gaierror)


# Checks that tell "a dependency is down" from a bug, added by the parts of the runtime
# a service uses: the database module adds its own when a service imports it. The
# gateway keeps no state, so it imports no database module and needs no driver.
OutageCheck = Callable[[BaseException], bool]
_OUTAGE_CHECKS: list[OutageCheck] = []


def recognise_outages(check: OutageCheck) -> None:
    """Errors for which ``check`` is true answer UNAVAILABLE (the service's database)."""
    if check not in _OUTAGE_CHECKS:
        _OUTAGE_CHECKS.append(check)


def _database_down(error: BaseException) -> bool:
    return any(check(error) for check in _OUTAGE_CHECKS)


def _dependency_name(full_service: str) -> str:
    """``shop.v1.Inventory`` -> ``inventory``."""
    return full_service.rsplit(".", 1)[-1].lower() or "a downstream service"


class Failures:
    """Turns whatever a handler raised into the status to answer with, and logs it."""

    def __init__(self, service: str, events: RateLimitedLog | None = None) -> None:
        self._service = service
        self._events = events or RateLimitedLog(log)

    def answer(self, error: Exception, method: str) -> ShopError | grpc.aio.AioRpcError:
        if isinstance(error, ShopError):
            return error
        if isinstance(error, grpc.aio.AioRpcError):
            return self._downstream(error, method)
        database_down = _database_down(error)
        if database_down or _network_error(error):
            dependency = (
                f"the {self._service} database"
                if database_down
                else f"a service {self._service} depends on"
            )
            # The driver's words stay in our log; the first line of them is enough.
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            self._events.log(
                ("unavailable", dependency),
                logging.WARNING,
                f"{dependency} is unavailable",
                extra={"method": method, "error": f"{type(error).__name__}: {reason}"},
            )
            return Unavailable(dependency)
        return self._internal(error, method)

    def _downstream(
        self, error: grpc.aio.AioRpcError, method: str
    ) -> ShopError | grpc.aio.AioRpcError:
        code = error.code()
        if code == grpc.StatusCode.UNKNOWN:
            # An UNKNOWN carries some process's exception text; it stops here.
            return self._internal(error, method, downstream=error.details() or "")
        if code == grpc.StatusCode.UNAVAILABLE and status_details_of(error) is None:
            # No shop server said this: our channel could not reach the callee (the
            # text is gRPC core's, with addresses). Name the callee instead.
            scope = current_scope.get()
            callee = scope.unavailable_dependency if scope is not None else None
            dependency = _dependency_name(callee or "")
            self._events.log(
                ("unavailable", dependency),
                logging.WARNING,
                f"{dependency} is unavailable",
                extra={"method": method, "error": (error.details() or "")[:300]},
            )
            return Unavailable(dependency, no_retry=True)
        # abort_with passes it up as it is (and stops retries of UNAVAILABLE and CANCELLED).
        return error

    def _internal(self, error: Exception, method: str, downstream: str | None = None) -> Internal:
        span = trace.get_current_span()
        context = span.get_span_context()
        trace_id = format(context.trace_id, "032x") if context.is_valid else None
        if span.is_recording():
            span.record_exception(error)
        # A downstream UNKNOWN is raised at the same line in grpc for every method.
        identity = error_id(error, salt="" if downstream is None else method)
        extra: dict[str, Any] = {"method": method, "error_id": identity}
        if downstream is not None:
            extra["downstream_error"] = downstream[:300]
        self._events.log(
            ("internal", identity),
            logging.ERROR,
            "unexpected error",
            exc_info=error,
            extra=extra,
        )
        return Internal(identity, trace_id)
