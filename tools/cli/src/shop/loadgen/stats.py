"""What a load run measured, and the JSON object ``shop load --json`` prints.

Latency goes into an HDR histogram (microsecond resolution, 3 significant digits,
up to one hour) because percentiles of a load test must not depend on keeping
every sample, and because an HDR histogram keeps the tail exact to 0.1 %. The
exact maximum is kept beside it so the report never rounds the worst call.

The per-pod share is the point of the project: every shop response carries the
``shop-route`` trailer naming the pod that served each hop, so counting calls per
pod per hop shows whether a balancing mode spreads load. ``imbalance`` condenses a
hop into one number: the busiest pod's share divided by the mean share. 1.0 is
perfect; with three pods, pick_first (everything on one pod) gives 3.0.

JSON schema of :meth:`Summary.to_json` (stable: benchmarks parse it)::

    {
      "workload": str,            # "mix" | "place" | "products" | "echo"
      "mode": str,                # "closed" (fixed concurrency) | "open" (fixed rate)
      "target": str,              # gRPC target string used
      "lb_policy": str,           # client policy: "pick_first" | "round_robin"
      "channels": int,            # client channels the calls were spread over
      "concurrency": int | null,  # closed loop: workers; null in open loop
      "rps": float | null,        # open loop: scheduled calls/s; null in closed loop
      "duration_s": float,        # measured window (warm-up excluded)
      "warmup_s": float,
      "calls": int,               # completed calls in the window, any status
      "calls_per_s": float,       # calls / duration_s
      "latency_ms": {"p50": float, "p90": float, "p99": float, "max": float},
      "status_counts": {CODE: int},   # e.g. {"OK": 990, "UNAVAILABLE": 10}
      "method_counts": {METHOD: int}, # e.g. {"PlaceOrder": 700, "GetOrder": 150}
      "per_hop": {service: {pod: int}},   # calls each pod served, per hop
      "imbalance": {service: float},      # max share / mean share, per hop
      "errors": int,              # calls with a status other than OK
      "failures": int,            # errors other than the expected business outcomes
      "dropped": int,             # open loop: scheduled calls not sent (in-flight cap)
      "timeouts": int,            # calls that ended DEADLINE_EXCEEDED (also in status_counts)
      "objective_ms": float | null,       # the latency objective (--objective-ms), if any
      "within_objective": float | null,   # share of calls (dropped ones included) that
                                          # ended OK or FAILED_PRECONDITION within it
      "goodput_per_s": float,     # such calls per second (with no objective: every
                                  # call with an expected status)
      "timeline": {...}           # only with --timeline: see shop.loadgen.timeline
    }

Latency covers every completed call whatever its status: in closed loop from send to
completion, in open loop from the *intended* send time (see ``shop.loadgen.runner``).
The objective is judged per call, not on a percentile: "97% of calls within 250 ms"
is what a service-level objective states, and it counts a failed or dropped call as a
miss however fast it failed.
``per_hop`` counts the calls that came back with a route, i.e. successful calls of a
server on the shop runtime; it is empty for a bare server that sends no route.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from shop.loadgen.timeline import Timeline
from shop.runtime.callscope import parse_route

# Statuses a healthy shop can return under load: FAILED_PRECONDITION is "out of
# stock". Anything else (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ...) means
# the system or the balancing failed the client.
EXPECTED_CODES = frozenset({"OK", "FAILED_PRECONDITION"})

_MIN_US = 1
_MAX_US = 3_600_000_000  # one hour: far beyond any per-call deadline
_SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class CallResult:
    """The outcome of one call: method, status code name, and its route (None if absent)."""

    method: str
    code: str
    route: str | None = None


def imbalance(counts: Mapping[str, int], expected_pods: int = 0) -> float:
    """Busiest pod's share divided by the mean share; 1.0 means perfectly even.

    ``expected_pods`` counts pods that should exist even if they served nothing (a
    pod with no calls never appears in a trailer); the mean is over the larger of
    that and the pods seen. 0.0 when there were no calls.
    """
    total = sum(counts.values())
    pods = max(len(counts), expected_pods)
    if total <= 0 or pods == 0:
        return 0.0
    return max(counts.values(), default=0) * pods / total


def shares(counts: Mapping[str, int], pods: Iterable[str] | None = None) -> dict[str, float]:
    """Each pod's fraction of the hop's calls (over every pod in ``counts``, 1.0 in all).

    ``pods`` names the pods to report, in that order: a pod that should exist but
    served nothing never appears in a trailer, and gets 0.0 here (the lab lists the
    replicas it started). Without it, the pods in ``counts``.
    """
    total = sum(counts.values())
    chosen = counts if pods is None else pods
    return {pod: (counts.get(pod, 0) / total if total else 0.0) for pod in chosen}


@dataclass(frozen=True)
class RunInfo:
    """How a run was configured: echoed into the summary so results explain themselves."""

    workload: str
    mode: str
    target: str
    lb_policy: str
    channels: int
    concurrency: int | None
    rps: float | None
    duration_s: float
    warmup_s: float


@dataclass(frozen=True)
class Summary:
    info: RunInfo
    calls: int
    latency_ms: dict[str, float]
    status_counts: dict[str, int]
    method_counts: dict[str, int]
    per_hop: dict[str, dict[str, int]]
    expected_pods: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    timeline: dict[str, Any] | None = None
    objective_ms: float | None = None
    # Calls that ended with an expected status within the objective (every call with
    # an expected status when there is no objective).
    good: int = 0

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.info.duration_s if self.info.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.status_counts.items() if code != "OK")

    @property
    def failures(self) -> int:
        return sum(n for code, n in self.status_counts.items() if code not in EXPECTED_CODES)

    @property
    def timeouts(self) -> int:
        return self.status_counts.get("DEADLINE_EXCEEDED", 0)

    @property
    def within_objective(self) -> float | None:
        """Share of the calls asked for (sent or dropped) that met the objective."""
        asked = self.calls + self.dropped
        if self.objective_ms is None or asked == 0:
            return None
        return self.good / asked

    @property
    def goodput_per_s(self) -> float:
        return self.good / self.info.duration_s if self.info.duration_s > 0 else 0.0

    def imbalance(self) -> dict[str, float]:
        return {
            service: round(imbalance(pods, self.expected_pods.get(service, 0)), 3)
            for service, pods in self.per_hop.items()
        }

    def to_json(self) -> dict[str, Any]:
        info = self.info
        return {
            "workload": info.workload,
            "mode": info.mode,
            "target": info.target,
            "lb_policy": info.lb_policy,
            "channels": info.channels,
            "concurrency": info.concurrency,
            "rps": info.rps,
            "duration_s": info.duration_s,
            "warmup_s": info.warmup_s,
            "calls": self.calls,
            "calls_per_s": round(self.calls_per_s, 1),
            "latency_ms": dict(self.latency_ms),
            "status_counts": dict(self.status_counts),
            "method_counts": dict(self.method_counts),
            "per_hop": {service: dict(pods) for service, pods in self.per_hop.items()},
            "imbalance": self.imbalance(),
            "errors": self.errors,
            "failures": self.failures,
            "dropped": self.dropped,
            "timeouts": self.timeouts,
            "objective_ms": self.objective_ms,
            "within_objective": (
                None if self.within_objective is None else round(self.within_objective, 4)
            ),
            "goodput_per_s": round(self.goodput_per_s, 1),
            **({"timeline": self.timeline} if self.timeline is not None else {}),
        }


class Stats:
    """Accumulates the calls of the measured window (the runner skips warm-up calls)."""

    def __init__(self, timeline: Timeline | None = None, objective_s: float | None = None) -> None:
        self.timeline = timeline
        self.objective_s = objective_s
        self.good = 0
        self._histogram = HdrHistogram(_MIN_US, _MAX_US, _SIGNIFICANT_DIGITS)
        self._max_s = 0.0
        self.status_counts: Counter[str] = Counter()
        self.method_counts: Counter[str] = Counter()
        self.per_hop: dict[str, Counter[str]] = {}
        self.dropped = 0

    @property
    def calls(self) -> int:
        return sum(self.status_counts.values())

    @property
    def errors(self) -> int:
        return self.calls - self.status_counts["OK"]

    def record(self, result: CallResult, latency_s: float) -> None:
        micros = min(max(round(latency_s * 1e6), _MIN_US), _MAX_US)
        self._histogram.record_value(micros)
        self._max_s = max(self._max_s, latency_s)
        self.status_counts[result.code] += 1
        if result.code in EXPECTED_CODES and (
            self.objective_s is None or latency_s <= self.objective_s
        ):
            self.good += 1
        self.method_counts[result.method] += 1
        if result.route:
            for service, pod in parse_route(result.route).items():
                self.per_hop.setdefault(service, Counter())[pod] += 1
        if self.timeline is not None:
            self.timeline.record(result.route, result.code not in EXPECTED_CODES, time.time())

    def record_dropped(self) -> None:
        self.dropped += 1

    def percentile_ms(self, percentile: float) -> float:
        if self._histogram.get_total_count() == 0:
            return 0.0
        return float(self._histogram.get_value_at_percentile(percentile)) / 1000.0

    def latency_ms(self) -> dict[str, float]:
        return {
            "p50": round(self.percentile_ms(50), 3),
            "p90": round(self.percentile_ms(90), 3),
            "p99": round(self.percentile_ms(99), 3),
            "max": round(self._max_s * 1000.0, 3),
        }

    def summarize(self, info: RunInfo, expected_pods: Mapping[str, int] | None = None) -> Summary:
        return Summary(
            info=info,
            calls=self.calls,
            latency_ms=self.latency_ms(),
            status_counts=_sorted_counts(self.status_counts.items()),
            method_counts=_sorted_counts(self.method_counts.items()),
            per_hop={service: dict(sorted(pods.items())) for service, pods in self.per_hop.items()},
            expected_pods=dict(expected_pods or {}),
            dropped=self.dropped,
            timeline=self.timeline.to_json() if self.timeline is not None else None,
            objective_ms=None if self.objective_s is None else self.objective_s * 1000.0,
            good=self.good,
        )


def _sorted_counts(items: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Largest first, then by name: stable output for humans and diffs."""
    return dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))
