"""CPU per call, split by category: the measured CPU, shared out by py-spy's samples.

The CPU figures are measured (``/proc``: user + system time), the samples only say how
to share them out. For one configuration:

1. the total is the table's figure: the median over rounds of the servers' CPU per
   call the front server handled;
2. each process gets its share of the CPU all the profiled rounds used;
3. each *thread* of a process gets its share of the process's part, again measured
   (``/proc/PID/task/TID/stat``, read when py-spy starts and before it stops);
4. each thread's part is split over the categories in proportion to that thread's
   samples (see :mod:`shop.bench.stacks`); a thread py-spy never sampled goes by its
   OS name (gRPC core's native threads), else to ``unsampled``.

So the categories (with ``unsampled``) add up to the measured CPU per call, per
process and in total. Step 3 matters: py-spy counts a thread as busy while it is
runnable, waiting for a core too, so on a loaded two-core machine its sample counts
follow wake-ups more than CPU. Measured on the chain, gRPC's poller thread drew ten
times more samples than its CPU time would give it and the aiosqlite worker two and
a half times; weighting threads by their measured CPU takes that error out, leaving
it only inside a thread (the loop thread's samples just after a wake-up count as
event loop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shop.bench.stacks import Category, CategoryCounts, native_thread_category


@dataclass(frozen=True)
class ThreadCpu:
    """One OS thread of a profiled process: its name and CPU over the profiled rounds."""

    tid: int
    os_name: str  # /proc/PID/task/TID/comm
    cpu_s: float


@dataclass(frozen=True)
class ThreadBreakdown:
    tid: int
    os_name: str
    python_name: str | None  # from py-spy's stacks, if it sampled the thread
    cpu_s: float
    samples: int
    # What its CPU went to: its samples' categories, a native thread's category, or
    # None (neither: counted as unsampled).
    categories: dict[Category, float] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "tid": self.tid,
            "os_name": self.os_name,
            "python_name": self.python_name,
            "cpu_s": round(self.cpu_s, 3),
            "samples": self.samples,
            "shares": _categories_json(self.categories, digits=3),
        }


@dataclass(frozen=True)
class ProcessBreakdown:
    process: str
    cpu_us_per_call: float
    categories_us: dict[Category, float]
    unsampled_us: float
    samples: int  # stacks py-spy wrote (with or without frames)
    empty: int  # of those, stacks with no frame (counted in no category)
    py_spy_errors: int  # samples py-spy could not read
    threads: tuple[ThreadBreakdown, ...] = ()
    flame_graph: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_us_per_call": round(self.cpu_us_per_call, 1),
            "categories_us": _categories_json(self.categories_us),
            "unsampled_us": round(self.unsampled_us, 1),
            "samples": self.samples,
            "empty_stacks": self.empty,
            "py_spy_errors": self.py_spy_errors,
            "threads": [thread.to_json() for thread in self.threads],
            "flame_graph": None if self.flame_graph is None else str(self.flame_graph),
        }


@dataclass(frozen=True)
class CpuBreakdown:
    config: str
    per: str  # what a call is: "PlaceOrder" (the chain's default workload) or "call"
    cpu_us_per_call: float
    processes: tuple[ProcessBreakdown, ...]
    sample_rate_hz: int

    def categories_us(self) -> dict[Category, float]:
        """Every process's categories added up."""
        total = dict.fromkeys(Category, 0.0)
        for process in self.processes:
            for category, us in process.categories_us.items():
                total[category] += us
        return total

    @property
    def unsampled_us(self) -> float:
        return sum(process.unsampled_us for process in self.processes)

    def to_json(self) -> dict[str, Any]:
        return {
            "per": self.per,
            "cpu_us_per_call": round(self.cpu_us_per_call, 1),
            "categories_us": _categories_json(self.categories_us()),
            "unsampled_us": round(self.unsampled_us, 1),
            "processes": {p.process: p.to_json() for p in self.processes},
            "sample_rate_hz": self.sample_rate_hz,
        }


def _categories_json(
    categories: Mapping[Category, float] | None, digits: int = 1
) -> dict[str, float] | None:
    if categories is None:
        return None
    return {category.value: round(value, digits) for category, value in categories.items()}


@dataclass(frozen=True)
class ProcessProfile:
    """What the profiler gathered about one process over the profiled rounds."""

    cpu_s: float  # measured by the bench, the same figure its CPU per call comes from
    counts_by_thread: Mapping[int | None, CategoryCounts]
    threads: Sequence[ThreadCpu] = ()
    python_names: Mapping[int, str] = field(default_factory=dict)
    py_spy_errors: int = 0
    flame_graph: Path | None = None


def split_process(name: str, process_us: float, profile: ProcessProfile) -> ProcessBreakdown:
    """One process's CPU per call over categories (steps 3 and 4 of the module doc)."""
    counts = profile.counts_by_thread
    threads = [thread for thread in profile.threads if thread.cpu_s > 0]
    # (thread id, share of the process's CPU, what that CPU went to or None)
    weights: list[tuple[int | None, float, dict[Category, float] | None]]
    details: list[ThreadBreakdown] = []
    if not threads:
        # No per-thread CPU (or none used): the process's samples, all threads together.
        merged: dict[Category, int] = dict.fromkeys(Category, 0)
        for thread_counts in counts.values():
            for category, n in thread_counts.samples.items():
                merged[category] += n
        pooled = CategoryCounts(merged, 0)
        weights = [(None, 1.0, pooled.shares())]
    else:
        thread_cpu = sum(thread.cpu_s for thread in threads)
        weights = []
        for thread in sorted(threads, key=lambda t: -t.cpu_s):
            found = counts.get(thread.tid)
            shares = None if found is None else found.shares()
            if shares is None:
                native = native_thread_category(thread.os_name)
                shares = None if native is None else {c: float(c is native) for c in Category}
            weights.append((thread.tid, thread.cpu_s / thread_cpu, shares))
            details.append(
                ThreadBreakdown(
                    thread.tid,
                    thread.os_name,
                    profile.python_names.get(thread.tid),
                    thread.cpu_s,
                    0 if found is None else found.total,
                    shares,
                )
            )
    categories = dict.fromkeys(Category, 0.0)
    unsampled = 0.0
    for _, weight, shares in weights:
        if shares is None:
            unsampled += process_us * weight
            continue
        for category, share in shares.items():
            categories[category] += process_us * weight * share
    return ProcessBreakdown(
        process=name,
        cpu_us_per_call=process_us,
        categories_us=categories,
        unsampled_us=unsampled,
        samples=sum(found.total for found in counts.values()),
        empty=sum(found.empty for found in counts.values()),
        py_spy_errors=profile.py_spy_errors,
        threads=tuple(details),
        flame_graph=profile.flame_graph,
    )


def cpu_breakdown(
    config: str,
    per: str,
    cpu_us_per_call: float,
    processes: Mapping[str, ProcessProfile],
    sample_rate_hz: int,
) -> CpuBreakdown:
    """The configuration's breakdown (steps 1 and 2 of the module doc, then per process)."""
    total_cpu_s = sum(profile.cpu_s for profile in processes.values())
    split = []
    for name, profile in processes.items():
        share = profile.cpu_s / total_cpu_s if total_cpu_s > 0 else 1 / len(processes)
        split.append(split_process(name, cpu_us_per_call * share, profile))
    return CpuBreakdown(config, per, cpu_us_per_call, tuple(split), sample_rate_hz)
