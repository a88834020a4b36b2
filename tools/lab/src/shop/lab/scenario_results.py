"""What a scenario run measured, as typed records and their JSON (``<scenario>.json``).

::

    {"scenario": "slow-pod" | "failing-pod" | "new-pod-wait", "settings": {...},
     "machine": {...},
     "offered": OfferedRate | null,
     "modes": {mode: SlowPodMode | FailingPodMode}}

    SlowPodMode = {"description", "slow_pod", "slow_cores", "peer_cores",
                   "steady": SteadyState, "fixed_rate": FixedRate}
    FailingPodMode = {"description", "failing_pod", "duration_s", "calls", "calls_per_s",
                      "p99_ms", "failures", "status_counts",
                      "attempts": {pod: {"answered", "failed", "retried"}},
                      "stopped_after_s": float | null, "ejected": bool,
                      "attempt_timeline": [[t, {pod: attempts}]],
                      "caller_timeline": [[t, calls, failures]]}
    WaitPoint = {"mode", "varied", "max_age_s", "grace_s", "reresolution_s", "ttl_s",
                 "first_traffic_s", "fair_share_s", "window_s"}   (null: not set / never)

(SteadyState, FixedRate and OfferedRate as in ``lab.json``, ``shop.lab.results``.)
``from_json`` reads back what ``to_json`` wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shop.lab.attempts import AttemptCounts
from shop.lab.results import (
    FixedRate,
    Json,
    Machine,
    OfferedRate,
    SteadyState,
    counts_from_json,
    optional_float,
    service_of,
)


@dataclass(frozen=True)
class SlowPodMode:
    """One mode with one inventory pod at a fraction of its peers' CPU limit."""

    name: str
    description: str
    slow_pod: str
    slow_cores: float  # the slow pod's CPU limit
    peer_cores: float  # every other pod's of its service
    steady: SteadyState  # closed loop
    fixed_rate: FixedRate  # open loop, judged by the objective

    @property
    def service(self) -> str:
        return service_of(self.slow_pod)

    @property
    def slow_share(self) -> float:
        """The slow pod's share of its service's calls in the closed loop."""
        return self.steady.shares.get(self.service, {}).get(self.slow_pod, 0.0)

    @property
    def fair_share(self) -> float:
        """What an even spread gives each pod of the service."""
        return 1 / max(1, len(self.steady.shares.get(self.service, {})))

    def to_json(self) -> Json:
        return {
            "description": self.description,
            "slow_pod": self.slow_pod,
            "slow_cores": self.slow_cores,
            "peer_cores": self.peer_cores,
            "steady": self.steady.to_json(),
            "fixed_rate": self.fixed_rate.to_json(),
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> SlowPodMode:
        return cls(
            name=name,
            description=str(raw["description"]),
            slow_pod=str(raw["slow_pod"]),
            slow_cores=float(raw["slow_cores"]),
            peer_cores=float(raw["peer_cores"]),
            steady=SteadyState.from_json(raw["steady"]),
            fixed_rate=FixedRate.from_json(raw["fixed_rate"]),
        )


@dataclass(frozen=True)
class FailingPodMode:
    """One mode with one inventory pod answering every call with a server error while
    its health says SERVING."""

    name: str
    description: str
    failing_pod: str
    duration_s: float
    calls: int  # what the caller (the load generator, at the gateway) made
    calls_per_s: float
    p99_ms: float
    failures: int  # calls the caller saw fail
    status_counts: dict[str, int]
    attempts: dict[str, AttemptCounts]  # per pod of the service, over the run
    # When the failing pod got its last attempt (s after the load began), None if it
    # got none; ``ejected``: it then got none for the rest of the run (a few seconds at
    # least), as opposed to still getting attempts at the end.
    stopped_after_s: float | None
    ejected: bool
    # Per interval: attempts answered per pod; and the caller's calls and failures.
    attempt_timeline: tuple[tuple[float, dict[str, int]], ...] = ()
    caller_timeline: tuple[tuple[float, int, int], ...] = ()

    @property
    def failing_attempts(self) -> int:
        return self.attempts.get(self.failing_pod, AttemptCounts()).answered

    @property
    def failing_share(self) -> float:
        """The failing pod's share of the attempts its service answered."""
        total = sum(a.answered for a in self.attempts.values())
        return self.failing_attempts / total if total else 0.0

    @property
    def retried(self) -> dict[str, int]:
        """Per pod, attempts that arrived as retries: where the retries went."""
        return {pod: counts.retried for pod, counts in self.attempts.items()}

    def to_json(self) -> Json:
        return {
            "description": self.description,
            "failing_pod": self.failing_pod,
            "duration_s": self.duration_s,
            "calls": self.calls,
            "calls_per_s": self.calls_per_s,
            "p99_ms": self.p99_ms,
            "failures": self.failures,
            "status_counts": dict(self.status_counts),
            "attempts": {
                pod: {"answered": a.answered, "failed": a.failed, "retried": a.retried}
                for pod, a in self.attempts.items()
            },
            "stopped_after_s": self.stopped_after_s,
            "ejected": self.ejected,
            "attempt_timeline": [[t, dict(pods)] for t, pods in self.attempt_timeline],
            "caller_timeline": [list(row) for row in self.caller_timeline],
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> FailingPodMode:
        return cls(
            name=name,
            description=str(raw["description"]),
            failing_pod=str(raw["failing_pod"]),
            duration_s=float(raw["duration_s"]),
            calls=int(raw["calls"]),
            calls_per_s=float(raw["calls_per_s"]),
            p99_ms=float(raw["p99_ms"]),
            failures=int(raw["failures"]),
            status_counts=counts_from_json(raw["status_counts"]),
            attempts={
                str(pod): AttemptCounts(int(a["answered"]), int(a["failed"]), int(a["retried"]))
                for pod, a in raw["attempts"].items()
            },
            stopped_after_s=optional_float(raw["stopped_after_s"]),
            ejected=bool(raw["ejected"]),
            attempt_timeline=tuple(
                (float(t), counts_from_json(pods)) for t, pods in raw.get("attempt_timeline", [])
            ),
            caller_timeline=tuple(
                (float(t), int(calls), int(failures))
                for t, calls, failures in raw.get("caller_timeline", [])
            ),
        )


@dataclass(frozen=True)
class WaitPoint:
    """One point of the new-pod-wait sweep: a mode with these settings, one inventory
    pod added under load, and how long until it got calls and its fair share."""

    name: str  # unique in the sweep, e.g. "headless max age 4 s"
    mode: str
    varied: str  # what this point changes from the lab's headless, see scenarios.WAIT_*
    max_age_s: float | None  # None: the mode has no max connection age
    grace_s: float | None
    reresolution_s: float | None  # clients' minimum time between DNS resolutions
    ttl_s: float | None  # the cluster DNS's answers' TTL
    first_traffic_s: float | None  # None: no call reached the new pod in the window
    fair_share_s: float | None  # until it served 80% of an even share (None: never)
    window_s: float

    def to_json(self) -> Json:
        return {
            "mode": self.mode,
            "varied": self.varied,
            "max_age_s": self.max_age_s,
            "grace_s": self.grace_s,
            "reresolution_s": self.reresolution_s,
            "ttl_s": self.ttl_s,
            "first_traffic_s": self.first_traffic_s,
            "fair_share_s": self.fair_share_s,
            "window_s": self.window_s,
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> WaitPoint:
        return cls(
            name=name,
            mode=str(raw["mode"]),
            varied=str(raw["varied"]),
            max_age_s=optional_float(raw["max_age_s"]),
            grace_s=optional_float(raw["grace_s"]),
            reresolution_s=optional_float(raw["reresolution_s"]),
            ttl_s=optional_float(raw["ttl_s"]),
            first_traffic_s=optional_float(raw["first_traffic_s"]),
            fair_share_s=optional_float(raw["fair_share_s"]),
            window_s=float(raw["window_s"]),
        )


ScenarioMode = SlowPodMode | FailingPodMode | WaitPoint
_RECORDS: dict[str, type[SlowPodMode] | type[FailingPodMode] | type[WaitPoint]] = {
    "slow-pod": SlowPodMode,
    "failing-pod": FailingPodMode,
    "new-pod-wait": WaitPoint,
}


@dataclass(frozen=True)
class ScenarioResults:
    scenario: str
    modes: Sequence[ScenarioMode]
    settings: Mapping[str, Any]
    machine: Machine | None = None
    offered: OfferedRate | None = None

    def to_json(self) -> Json:
        return {
            "scenario": self.scenario,
            "settings": dict(self.settings),
            "machine": None if self.machine is None else self.machine.to_json(),
            "offered": None if self.offered is None else self.offered.to_json(),
            "modes": {mode.name: mode.to_json() for mode in self.modes},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ScenarioResults:
        scenario = str(raw["scenario"])
        record = _RECORDS[scenario]
        return cls(
            scenario=scenario,
            modes=tuple(record.from_json(name, m) for name, m in raw["modes"].items()),
            settings=dict(raw["settings"]),
            machine=None if raw.get("machine") is None else Machine.from_json(raw["machine"]),
            offered=None if raw.get("offered") is None else OfferedRate.from_json(raw["offered"]),
        )
