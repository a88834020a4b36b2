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
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime [11], stime [12].
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of ``pid`` and of all its children, past and present (a server that
    forks a process per connection, such as PostgreSQL); None if ``pid`` cannot be read.

    Children alive now count their own CPU; the kernel adds the CPU of children that
    exited (once ``pid`` has reaped them) to ``pid``'s own ``cutime``/``cstime``, so a
    connection closed between two readings keeps its share. A child that started since
    an earlier reading counts all its CPU, which was all spent since."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime [11], stime [12], cutime [13], cstime [14] (reaped children).
    own_and_reaped = sum(int(field) for field in fields[11:15]) / _CLOCK_TICKS
    return own_and_reaped + live_cpu_s(child_pids(pid))


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is [0]): the
    name (field 2) may hold spaces, the fields after its ')' are fixed."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` now, from ``/proc``."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))  # None: gone meanwhile
            # The parent pid is [1].
            if fields is not None and int(fields[1]) == parent:
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
