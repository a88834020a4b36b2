"""The lab's results as typed records: what the runner measures, the table and the
page show, ``lab.json`` holds and ``shop lab --json`` prints.

The JSON keeps the shape it always had, so a script or an earlier ``lab.json`` reads
the same::

    {"settings": {name: value},               # the run's LabSettings
     "machine": {"cpus": int, "python": str, "grpcio": str, "platform": str},
     "modes": {mode name: {
         "description": str,
         "steady": {"calls", "calls_per_s", "p50_ms", "p99_ms",
                    "shares": {hop: {pod: share}}, "imbalance": {hop: float},
                    "cpu_s_per_1000_calls": float | null, "failures", "status_counts"},
         "scale_up": {"from", "to", "first_traffic_s": float | null,
                      "fair_share_s": float | null, "window_s"},
         "rollout": {"calls", "failures"}, "scale_down": {"calls", "failures"},
         "failures_total": int, "status_counts": {code: int},
         "timeline": {"start_unix", "bucket_s", "buckets": [...]},  # shop.loadgen.timeline
         "events": [{"t", "kind", "detail"}],
         "control_plane": {"dns_queries" | "xds_pushes": int}}}}

``from_json`` reads back what ``to_json`` wrote (``from_json(x.to_json()) == x``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


def counts_from_json(raw: Mapping[str, Any]) -> dict[str, int]:
    """{name: count}, e.g. calls per status code or per pod."""
    return {str(key): int(n) for key, n in raw.items()}


def floats_from_json(raw: Mapping[str, Any]) -> dict[str, float]:
    """{name: value}, e.g. the imbalance per hop or the share per pod."""
    return {str(key): float(value) for key, value in raw.items()}


def per_hop_from_json(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """{hop: {pod: calls}}."""
    return {str(hop): counts_from_json(pods) for hop, pods in raw.items()}


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Event:
    """Something the lab did to the cluster, on the load timeline's axis."""

    t: float  # seconds after the timeline's start
    kind: str  # "scale-up" | "restart" | "scale-down"
    detail: str = ""

    def to_json(self) -> Json:
        return {"t": round(self.t, 3), "kind": self.kind, "detail": self.detail}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Event:
        return cls(float(raw["t"]), str(raw["kind"]), str(raw.get("detail", "")))


@dataclass(frozen=True)
class Bucket:
    """Calls that completed in one time bucket, per pod of each hop."""

    t: float  # bucket start, seconds after the timeline's start
    calls: int
    failures: int
    per_hop: dict[str, dict[str, int]] = field(default_factory=dict)

    def served(self, hop: str) -> dict[str, int]:
        return self.per_hop.get(hop, {})

    def to_json(self) -> Json:
        return {
            "t": self.t,
            "calls": self.calls,
            "failures": self.failures,
            "per_hop": {hop: dict(pods) for hop, pods in self.per_hop.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Bucket:
        return cls(
            t=float(raw["t"]),
            calls=int(raw["calls"]),
            failures=int(raw["failures"]),
            per_hop=per_hop_from_json(raw.get("per_hop", {})),
        )


@dataclass(frozen=True)
class Timeline:
    """The load generator's timeline (``shop load --timeline``): a bucket per interval."""

    start_unix: float
    bucket_s: float
    buckets: Sequence[Bucket] = ()

    def overlapping(self, start: float, end: float) -> list[Bucket]:
        """Buckets that overlap [start, end)."""
        return [b for b in self.buckets if b.t + self.bucket_s > start and b.t < end]

    def to_json(self) -> Json:
        return {
            "start_unix": self.start_unix,
            "bucket_s": self.bucket_s,
            "buckets": [b.to_json() for b in self.buckets],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Timeline:
        return cls(
            start_unix=float(raw["start_unix"]),
            bucket_s=float(raw["bucket_s"]),
            buckets=tuple(Bucket.from_json(b) for b in raw["buckets"]),
        )


@dataclass(frozen=True)
class SteadyState:
    """The balanced phase before any scaling."""

    calls: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    shares: dict[str, dict[str, float]]  # hop -> pod -> fraction of the hop's calls
    imbalance: dict[str, float]  # hop -> busiest pod's share / mean share
    cpu_s_per_1000_calls: float | None  # None: no calls to divide by
    failures: int
    status_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> Json:
        return {
            "calls": self.calls,
            "calls_per_s": self.calls_per_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "shares": {hop: dict(pods) for hop, pods in self.shares.items()},
            "imbalance": dict(self.imbalance),
            "cpu_s_per_1000_calls": self.cpu_s_per_1000_calls,
            "failures": self.failures,
            "status_counts": dict(self.status_counts),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SteadyState:
        return cls(
            calls=int(raw["calls"]),
            calls_per_s=float(raw["calls_per_s"]),
            p50_ms=float(raw["p50_ms"]),
            p99_ms=float(raw["p99_ms"]),
            shares={str(hop): floats_from_json(pods) for hop, pods in raw["shares"].items()},
            imbalance=floats_from_json(raw["imbalance"]),
            cpu_s_per_1000_calls=_optional_float(raw["cpu_s_per_1000_calls"]),
            failures=int(raw["failures"]),
            status_counts=counts_from_json(raw.get("status_counts", {})),
        )


@dataclass(frozen=True)
class ScaleUp:
    """Inventory scaled from ``start`` to ``end`` replicas: how soon the new pods served."""

    start: int  # replicas before ("from" in JSON)
    end: int  # replicas after ("to" in JSON)
    first_traffic_s: float | None  # until a new pod's first call; None: never in the window
    fair_share_s: float | None  # until every new pod had 80% of a fair share; None: never
    window_s: float  # how long the lab watched

    def to_json(self) -> Json:
        return {
            "from": self.start,
            "to": self.end,
            "first_traffic_s": self.first_traffic_s,
            "fair_share_s": self.fair_share_s,
            "window_s": self.window_s,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ScaleUp:
        return cls(
            start=int(raw["from"]),
            end=int(raw["to"]),
            first_traffic_s=_optional_float(raw["first_traffic_s"]),
            fair_share_s=_optional_float(raw["fair_share_s"]),
            window_s=float(raw["window_s"]),
        )


@dataclass(frozen=True)
class PhaseCalls:
    """Calls during a phase (the rollout, the scale-down) and how many of them failed."""

    calls: int
    failures: int

    def to_json(self) -> Json:
        return {"calls": self.calls, "failures": self.failures}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PhaseCalls:
        return cls(calls=int(raw["calls"]), failures=int(raw["failures"]))


@dataclass(frozen=True)
class ModeResult:
    """Everything the lab measured for one balancing mode."""

    name: str  # the key in "modes"
    description: str
    steady: SteadyState
    scale_up: ScaleUp
    rollout: PhaseCalls
    scale_down: PhaseCalls
    failures_total: int  # over the whole events run
    status_counts: dict[str, int]  # over the whole events run
    timeline: Timeline  # of the events run
    events: Sequence[Event] = ()
    control_plane: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> Json:
        return {
            "description": self.description,
            "steady": self.steady.to_json(),
            "scale_up": self.scale_up.to_json(),
            "rollout": self.rollout.to_json(),
            "scale_down": self.scale_down.to_json(),
            "failures_total": self.failures_total,
            "status_counts": dict(self.status_counts),
            "timeline": self.timeline.to_json(),
            "events": [e.to_json() for e in self.events],
            "control_plane": dict(self.control_plane),
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> ModeResult:
        return cls(
            name=name,
            description=str(raw.get("description", "")),
            steady=SteadyState.from_json(raw["steady"]),
            scale_up=ScaleUp.from_json(raw["scale_up"]),
            rollout=PhaseCalls.from_json(raw["rollout"]),
            scale_down=PhaseCalls.from_json(raw["scale_down"]),
            failures_total=int(raw["failures_total"]),
            status_counts=counts_from_json(raw["status_counts"]),
            timeline=Timeline.from_json(raw["timeline"]),
            events=tuple(Event.from_json(e) for e in raw.get("events", [])),
            control_plane=counts_from_json(raw.get("control_plane", {})),
        )


@dataclass(frozen=True)
class Machine:
    """Where the lab ran: figures from a 2-core box and a 32-core one do not compare."""

    cpus: int | None
    python: str
    grpcio: str
    platform: str

    def to_json(self) -> Json:
        return {
            "cpus": self.cpus,
            "python": self.python,
            "grpcio": self.grpcio,
            "platform": self.platform,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Machine:
        cpus = raw.get("cpus")
        return cls(
            cpus=None if cpus is None else int(cpus),
            python=str(raw["python"]),
            grpcio=str(raw["grpcio"]),
            platform=str(raw["platform"]),
        )


@dataclass(frozen=True)
class LabResults:
    """A whole lab run: its settings, the machine, and each mode in the order run."""

    modes: Sequence[ModeResult]
    # The settings as recorded (LabSettings.to_json()); any JSON values, shown as they are.
    settings: dict[str, Any] = field(default_factory=dict)
    machine: Machine | None = None

    def mode(self, name: str) -> ModeResult:
        (found,) = [m for m in self.modes if m.name == name]
        return found

    def to_json(self) -> Json:
        return {
            "settings": dict(self.settings),
            **({"machine": self.machine.to_json()} if self.machine is not None else {}),
            "modes": {m.name: m.to_json() for m in self.modes},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LabResults:
        machine = raw.get("machine")
        return cls(
            modes=tuple(ModeResult.from_json(name, m) for name, m in raw["modes"].items()),
            settings=dict(raw.get("settings") or {}),
            machine=None if machine is None else Machine.from_json(machine),
        )
