"""Per-call ORCA load reports: how busy this server is, sent in every answer's trailers.

gRPC's ``weighted_round_robin`` policy (gRFC A58) gives each backend a weight from the
load reports its answers carry, so a pod that is slower than its peers (a lower CPU
limit, a noisy node) gets fewer calls instead of the same share and a longer queue.
A report is an ``xds.data.orca.v3.OrcaLoadReport`` in the binary trailer
``endpoint-load-metrics-bin``; gRPC's C core reads it on every call with no server
library (grpcio has no server-side ORCA API: this module is that API). The client
computes::

    weight = rps / (utilization + eps / rps * error_utilization_penalty)

so a backend doing more calls per unit of CPU weighs more, and one whose calls fail
(``eps``, errors per second) weighs less even when failing is cheap.

What is reported, over the last :data:`WINDOW_S`:

- ``cpu_utilization``: this process's CPU time per second over its CPU limit in cores
  (its cgroup quota, ``shop.runtime.cgroupfs``), so 1.0 is a saturated pod;
- ``rps_fractional``: calls answered per second (every caller's, not only the one
  reading the report);
- ``eps``: those answered with a status that means this server failed (see
  :data:`SERVER_TROUBLE`), per second.

The report is computed at most once per window and its bytes reused until the next,
so a call pays for a counter and a tuple, not an encoding.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import grpc

from shop.runtime.cgroupfs import CpuLimit

ORCA_TRAILER = "endpoint-load-metrics-bin"
# gRPC's weighted_round_robin updates weights every second by default
# (weightUpdatePeriod); a window as long gives it a fresh figure at each update.
WINDOW_S = 1.0

# Statuses that say the server failed the call, which count against its weight. A
# caller's mistake (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED...) or a business
# refusal (FAILED_PRECONDITION: out of stock) is the same on every pod and does not.
SERVER_TROUBLE = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

# OrcaLoadReport's fields used here, all proto3 doubles: (field number << 3) | 1 (the
# 64-bit wire type), then 8 bytes little-endian. Written by hand so the services need
# no xds-protos (a large wheel) for three numbers; tests parse it with xds-protos.
_CPU_UTILIZATION = 1 << 3 | 1
_RPS_FRACTIONAL = 6 << 3 | 1
_EPS = 7 << 3 | 1
_REPORT = struct.Struct("<BdBdBd")


def encode_load_report(cpu_utilization: float, rps: float, eps: float) -> bytes:
    """A serialized ``OrcaLoadReport`` with these three fields."""
    return _REPORT.pack(_CPU_UTILIZATION, cpu_utilization, _RPS_FRACTIONAL, rps, _EPS, eps)


class LoadReporter:
    """Counts the calls this server answers and gives each its report's bytes."""

    __slots__ = (
        "_calls",
        "_clock",
        "_cpu_clock",
        "_errors",
        "_limit",
        "_trailers",
        "_window_calls",
        "_window_cpu",
        "_window_errors",
        "_window_start",
    )

    def __init__(
        self,
        limit: CpuLimit | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._limit = limit if limit is not None else CpuLimit()
        self._clock = clock
        # CPU of every thread of this process: gRPC's own threads work for the calls too.
        self._cpu_clock = cpu_clock
        self._calls = 0
        self._errors = 0
        self._window_start = clock()
        self._window_cpu = cpu_clock()
        self._window_calls = 0
        self._window_errors = 0
        # Nothing until one window has been measured: no report is better than a guess
        # (the client leaves a backend with no weight at the mean of the others). Kept
        # as the trailers every answer of the window sends, built once.
        self._trailers: tuple[tuple[str, bytes], ...] = ()

    @property
    def report(self) -> bytes:
        """The serialized report of the last window, b"" before the first has closed."""
        return self._trailers[0][1] if self._trailers else b""

    def answered(self, code: grpc.StatusCode | None) -> None:
        """Counts one answered call (``code`` None or OK: success)."""
        self._calls += 1
        if code in SERVER_TROUBLE:
            self._errors += 1
        now = self._clock()
        if now - self._window_start >= WINDOW_S:
            self._close_window(now)

    def trailers(self) -> tuple[tuple[str, bytes], ...]:
        """The report as trailers to send, none before the first window has closed."""
        return self._trailers

    def _close_window(self, now: float) -> None:
        elapsed = now - self._window_start
        cpu = self._cpu_clock()
        utilization = (cpu - self._window_cpu) / elapsed / self._limit.cores()
        rps = (self._calls - self._window_calls) / elapsed
        eps = (self._errors - self._window_errors) / elapsed
        self._trailers = ((ORCA_TRAILER, encode_load_report(utilization, rps, eps)),)
        self._window_start = now
        self._window_cpu = cpu
        self._window_calls = self._calls
        self._window_errors = self._errors
