"""CPU seconds used by a set of processes, read from /proc (Linux).

Summed over every process a mode runs (replicas, proxies, and the lab process that
hosts the DNS and xDS servers), so proxy-based modes pay for their proxies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of ``pid``; 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command name: state is [0], utime [11], stime [12].
    return (int(fields[11]) + int(fields[12])) / _TICKS


def total_cpu_s(pids: Iterable[int], include_self: bool = True) -> float:
    total = sum(process_cpu_s(pid) for pid in pids)
    if include_self:
        total += time.process_time()
    return total
