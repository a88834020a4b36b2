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
            "handled_calls": self.handled_calls,
            "server_cpu_us_per_call": None if cpu is None else round(cpu, 1),
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
        document.update(
            {
                "calls_per_s_min": low,
                "calls_per_s_max": high,
                "calls": self.calls,
                "errors": self.errors,
                "spans": self.spans,
                "spans_by_service": self.spans_by_service,
                "spans_per_call": None if spans_per_call is None else round(spans_per_call, 2),
                "rounds": [s.to_json() for s in self.samples],
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
