"""Per-pod CPU and throttling, read from the pods' cgroups while the lab runs.

A pod's cgroup keeps cumulative counters (CPU used, CFS periods, periods in which the
quota ran out, time spent throttled) across restarts of its process, as a pod's
cgroup does across container restarts. The sampler reads them every interval in the
lab's event loop (a few small files per pod), so any window of a run can be turned
into per-pod figures afterwards: the load generator reports when its measured window
began and ended, and the readings nearest those instants bound it. The same readings
give the CPU timeline the page draws.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from shop.lab.results import CpuSample, CpuTimeline, PodCpu
from shop.local.cgroups import CpuStat, PodLimits


class CpuCounters(Protocol):
    """What the sampler reads of a pod's cgroup (``shop.local.cgroups.PodCgroup``)."""

    @property
    def limits(self) -> PodLimits: ...

    def cpu_stat(self) -> CpuStat: ...


PodCgroups = Callable[[], Mapping[str, CpuCounters]]


@dataclass(frozen=True)
class Reading:
    """Every pod's counters at one instant (a pod whose cgroup cannot be read is left
    out of that reading)."""

    unix: float
    stats: Mapping[str, CpuStat]


def pod_cpu(pod: str, limit_cores: float | None, before: Reading, after: Reading) -> PodCpu:
    """One pod's figures between two readings (the pod must be in both)."""
    first, last = before.stats[pod], after.stats[pod]
    seconds = after.unix - before.unix
    periods = last.periods - first.periods
    throttled = last.throttled_periods - first.throttled_periods
    return PodCpu(
        pod=pod,
        limit_cores=limit_cores,
        cores=round((last.usage_s - first.usage_s) / seconds, 4) if seconds > 0 else 0.0,
        throttled_share=round(throttled / periods, 4) if periods > 0 else 0.0,
        throttled_s=round(last.throttled_s - first.throttled_s, 3),
    )


class PodCpuSampler:
    """Reads every pod's cgroup each ``interval_s`` until stopped."""

    def __init__(self, cgroups: PodCgroups, interval_s: float) -> None:
        self.cgroups = cgroups
        self.interval_s = interval_s
        self.readings: list[Reading] = []
        self.limits: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def read(self) -> Reading:
        stats: dict[str, CpuStat] = {}
        for pod, cgroup in self.cgroups().items():
            try:
                stats[pod] = cgroup.cpu_stat()
            except OSError:
                continue  # a cgroup being removed: the pod is gone
            self.limits[pod] = cgroup.limits.cpu_cores
        reading = Reading(time.time(), stats)
        self.readings.append(reading)
        return reading

    async def _run(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.read()  # the last instant, so a window ending now is bounded

    def _nearest(self, unix: float) -> Reading:
        return min(self.readings, key=lambda r: abs(r.unix - unix))

    def window(self, start_unix: float, end_unix: float) -> tuple[PodCpu, ...]:
        """Per-pod figures over [start, end], for the pods present at both ends."""
        if not self.readings:
            return ()
        before, after = self._nearest(start_unix), self._nearest(end_unix)
        pods = sorted(set(before.stats) & set(after.stats))
        return tuple(pod_cpu(p, self.limits.get(p), before, after) for p in pods)

    def timeline(self, origin_unix: float, start_unix: float, end_unix: float) -> CpuTimeline:
        """Each interval's per-pod figures between ``start`` and ``end``, with ``t``
        counted from ``origin_unix`` (the load timeline's start, the events' axis)."""
        inside = [r for r in self.readings if start_unix <= r.unix <= end_unix]
        pods: dict[str, list[CpuSample]] = {}
        for before, after in itertools.pairwise(inside):
            for pod in sorted(set(before.stats) & set(after.stats)):
                figures = pod_cpu(pod, None, before, after)
                pods.setdefault(pod, []).append(
                    CpuSample(
                        round(before.unix - origin_unix, 3),
                        figures.cores,
                        figures.throttled_share,
                    )
                )
        return CpuTimeline(
            interval_s=self.interval_s,
            pods={pod: tuple(samples) for pod, samples in pods.items()},
            limits={pod: self.limits[pod] for pod in pods if pod in self.limits},
        )
