"""From measurements to the figures ``shop bench`` prints: medians per config, ratios.

Each configuration ran once per round; the median over rounds is robust to one
round that a neighbour on the shared machine disturbed, and the min-max spread is
kept so a reader can see how noisy the run was. Ratios are taken between medians,
so they can be checked against the table by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shop.bench.breakdown import CpuBreakdown
from shop.bench.configs import RATIOS, BenchConfig
from shop.bench.loadrun import LoadResult

METRICS = ("calls_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_call")


@dataclass(frozen=True)
class Sample:
    """One measurement: one configuration in one round."""

    config: str
    round: int
    load: LoadResult
    # CPU seconds the configuration's server processes used while the loader ran.
    server_cpu_s: float | None
    # Seconds of load the servers saw: the warm-up plus the measured window.
    loaded_s: float
    # Calls the front server handled meanwhile, by its own counter (None: bare echo).
    handled_calls: int | None = None
    # server_cpu_s per process (by Target.processes' names); None where unreadable.
    cpu_s_by_process: dict[str, float] | None = None

    @property
    def served_calls(self) -> float:
        """Calls the servers handled: their counter, else the loader's rate over the load."""
        if self.handled_calls is not None:
            return float(self.handled_calls)
        return self.load.calls_per_s * self.loaded_s

    @property
    def server_cpu_us_per_call(self) -> float | None:
        served = self.served_calls
        if self.server_cpu_s is None or served <= 0:
            return None
        return self.server_cpu_s / served * 1e6

    def metric(self, name: str) -> float | None:
        """One of :data:`METRICS` for this sample."""
        values = {
            "calls_per_s": self.load.calls_per_s,
            "p50_ms": self.load.p50_ms,
            "p99_ms": self.load.p99_ms,
            "server_cpu_us_per_call": self.server_cpu_us_per_call,
        }
        return values[name]

    def to_json(self) -> dict[str, Any]:
        cpu = self.server_cpu_us_per_call
        return {
            "round": self.round,
            "calls": self.load.calls,
            "calls_per_s": self.load.calls_per_s,
            "p50_ms": self.load.p50_ms,
            "p99_ms": self.load.p99_ms,
            "errors": self.load.errors,
            "status_counts": self.load.status_counts,
            "dropped": self.load.dropped,
            "within_objective": self.load.within_objective,
            "handled_calls": self.handled_calls,
            "server_cpu_us_per_call": None if cpu is None else round(cpu, 1),
            "server_cpu_s_by_process": (
                None
                if self.cpu_s_by_process is None
                else {name: round(s, 3) for name, s in self.cpu_s_by_process.items()}
            ),
        }


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass(frozen=True)
class ConfigResult:
    config: BenchConfig
    samples: tuple[Sample, ...]
    # Spans the sink received from this configuration's servers, per service name;
    # None when tracing was off.
    spans_by_service: dict[str, int] | None = None
    # Open loop: the calls/s offered and the objective calls were judged by.
    offered_calls_per_s: float | None = None
    objective_ms: float | None = None
    # With --profile (chain configurations): CPU per call by category.
    breakdown: CpuBreakdown | None = None

    @property
    def spans(self) -> int | None:
        return None if self.spans_by_service is None else sum(self.spans_by_service.values())

    def median(self, metric: str) -> float | None:
        return _median([s.metric(metric) for s in self.samples])

    @property
    def calls(self) -> int:
        return sum(s.load.calls for s in self.samples)

    @property
    def errors(self) -> int:
        return sum(s.load.errors for s in self.samples)

    @property
    def dropped(self) -> int:
        return sum(s.load.dropped for s in self.samples)

    @property
    def within_objective(self) -> float | None:
        """Median over rounds of the share of calls OK within the objective (open loop)."""
        return _median([s.load.within_objective for s in self.samples])

    def cpu_s_by_process(self) -> dict[str, float] | None:
        """Each process's CPU seconds over every round; None if a round could not tell."""
        total: dict[str, float] = {}
        for sample in self.samples:
            if sample.cpu_s_by_process is None:
                return None
            for name, seconds in sample.cpu_s_by_process.items():
                total[name] = total.get(name, 0.0) + seconds
        return total

    @property
    def calls_per_s_range(self) -> tuple[float, float]:
        rates = [s.load.calls_per_s for s in self.samples]
        return min(rates), max(rates)

    @property
    def spans_per_call(self) -> float | None:
        """Spans received per call the servers handled (warm-up included)."""
        served = sum(s.served_calls for s in self.samples)
        return None if self.spans is None or served <= 0 else self.spans / served

    def to_json(self) -> dict[str, Any]:
        low, high = self.calls_per_s_range
        document: dict[str, Any] = {"title": self.config.title, "tracing": self.config.tracing}
        for metric in METRICS:
            value = self.median(metric)
            document[metric] = None if value is None else round(value, 3)
        spans_per_call = self.spans_per_call
        within = self.within_objective
        document.update(
            {
                "calls_per_s_min": low,
                "calls_per_s_max": high,
                "calls": self.calls,
                "errors": self.errors,
                "offered_calls_per_s": self.offered_calls_per_s,
                "objective_ms": self.objective_ms,
                "within_objective": None if within is None else round(within, 4),
                "dropped": self.dropped,
                "spans": self.spans,
                "spans_by_service": self.spans_by_service,
                "spans_per_call": None if spans_per_call is None else round(spans_per_call, 2),
                "rounds": [s.to_json() for s in self.samples],
                "cpu_breakdown": None if self.breakdown is None else self.breakdown.to_json(),
            }
        )
        return document


@dataclass(frozen=True)
class RatioResult:
    key: str
    title: str
    numerator: str
    denominator: str
    values: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "numerator": self.numerator,
            "denominator": self.denominator,
            **{k: None if v is None else round(v, 3) for k, v in self.values.items()},
        }


def ratios(results: dict[str, ConfigResult]) -> list[RatioResult]:
    """Every ratio whose two configurations were both measured."""
    found = []
    for ratio in RATIOS:
        top, bottom = results.get(ratio.numerator), results.get(ratio.denominator)
        if top is None or bottom is None:
            continue
        values: dict[str, float | None] = {}
        for metric in METRICS:
            a, b = top.median(metric), bottom.median(metric)
            values[metric] = None if a is None or not b else a / b
        found.append(
            RatioResult(ratio.key, ratio.title, ratio.numerator, ratio.denominator, values)
        )
    return found


@dataclass(frozen=True)
class BenchReport:
    settings: dict[str, Any]
    results: dict[str, ConfigResult]
    ratios: list[RatioResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "configs": {key: result.to_json() for key, result in self.results.items()},
            "ratios": {ratio.key: ratio.to_json() for ratio in self.ratios},
        }
