"""CPU seconds of local processes, read from ``/proc`` (Linux), so cost can be reported
per call.

Throughput on a shared two-core machine moves with whatever else runs; CPU seconds
spent per call move much less, and they are what a balancing mode or telemetry really
costs a deployment (more cores for the same traffic). The bench and the lab both
measure this way; they differ only in what a process that is gone means (see below).
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
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed:
    # state is [0], utime [11], stime [12].
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of ``pid`` and of its children alive now (a server that forks a
    process per connection, such as PostgreSQL); None if ``pid`` cannot be read.

    A child that started since an earlier reading counts all its CPU, which was all
    spent since; one that exited since loses its share (the bench's database keeps its
    connections)."""
    own = process_cpu_s(pid)
    if own is None:
        return None
    return own + live_cpu_s(_children(pid))


def _children(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        # After the command name: state [0], parent pid [1].
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def total_cpu_s(pids: Iterable[int]) -> float | None:
    """Summed CPU seconds of ``pids``; None if any of them cannot be read.

    For a measurement that is wrong without every process (the bench's servers).
    """
    total = 0.0
    for pid in pids:
        seconds = process_cpu_s(pid)
        if seconds is None:
            return None
        total += seconds
    return total


def live_cpu_s(pids: Iterable[int]) -> float:
    """Summed CPU seconds of ``pids``, a process that has gone counting 0.0.

    For a measurement over processes that may come and go (the lab's replicas and
    proxies): the figure is still the best there is.
    """
    return sum(process_cpu_s(pid) or 0.0 for pid in pids)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` now, or None where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
