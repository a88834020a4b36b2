"""CPU time of server processes, read from ``/proc``, so cost can be reported per call.

Throughput on a shared two-core machine moves with whatever else runs; CPU
seconds spent per call move much less, and they are what telemetry really costs
a deployment (more cores for the same traffic).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, or None where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = text.rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def total_cpu_s(pids: Iterable[int]) -> float | None:
    """Summed CPU seconds of ``pids``; None if any of them cannot be read."""
    total = 0.0
    for pid in pids:
        seconds = process_cpu_s(pid)
        if seconds is None:
            return None
        total += seconds
    return total
