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
                    "cpu_s_per_1000_calls": float | null, "failures", "status_counts",
                    "pods": [PodCpu], "cost": ModeCost | null},
         "fixed_rate": {"rate", "objective_ms", "calls", "dropped", "p50_ms", "p99_ms",
                        "within_objective", "goodput_per_s", "timeouts", "failures",
                        "status_counts", "pods": [PodCpu]} | null,
         "scale_up": {"from", "to", "first_traffic_s": float | null,
                      "fair_share_s": float | null, "window_s"},
         "rollout": {"calls", "failures"}, "scale_down": {"calls", "failures"},
         "failures_total": int, "status_counts": {code: int},
         "timeline": {"start_unix", "bucket_s", "buckets": [...]},  # shop.loadgen.timeline
         "events": [{"t", "kind", "detail"}],
         "control_plane": {"dns_queries" | "xds_pushes": int},
         "cpu_timeline": {"interval_s", "pods": {pod: [[t, cores, throttled_share]]},
                          "limits": {pod: cores}} | null,
         "retries": {service: int},
         "node_client": {"target", "calls", "failures", "shares": {pod: share}} | null}},
     "offered": {"rate", "load_factor", "capacity_per_s", "bottleneck",
                 "cpu_ms_per_call": {service: ms}, "measured_in"}}

    PodCpu = {"pod", "limit_cores": float | null, "cores", "throttled_share",
              "throttled_s"}
    ModeCost = {"app_cpu_s_per_1000_calls": float | null,
                "proxy_cpu_s_per_1000_calls": float | null, "proxies": int,
                "proxy_rss_mib": float | null, "proxied_requests": int,
                "proxy_shares": {hop: {pod: share}}}

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


def service_of(pod: str) -> str:
    """``inventory`` for ``inventory-2``: pods are named after their service."""
    return pod.rpartition("-")[0]


def optional_float(value: Any) -> float | None:
    """A number from the JSON, or None for null."""
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
class PodCpu:
    """One pod's CPU over a measured window, read from its cgroup (``cpu.stat``)."""

    pod: str
    limit_cores: float | None  # the pod's CPU limit; None: none
    cores: float  # CPU seconds used / seconds of the window
    throttled_share: float  # CFS periods in which the quota ran out / periods with work
    throttled_s: float  # time the pod's threads waited for the next period

    def to_json(self) -> Json:
        return {
            "pod": self.pod,
            "limit_cores": self.limit_cores,
            "cores": self.cores,
            "throttled_share": self.throttled_share,
            "throttled_s": self.throttled_s,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PodCpu:
        return cls(
            pod=str(raw["pod"]),
            limit_cores=optional_float(raw["limit_cores"]),
            cores=float(raw["cores"]),
            throttled_share=float(raw["throttled_share"]),
            throttled_s=float(raw["throttled_s"]),
        )


def pods_from_json(raw: Sequence[Mapping[str, Any]]) -> tuple[PodCpu, ...]:
    return tuple(PodCpu.from_json(p) for p in raw)


@dataclass(frozen=True)
class CpuSample:
    """One pod's CPU in one interval of the events run."""

    t: float  # interval start, seconds after the load timeline's start
    cores: float
    throttled_share: float

    def to_json(self) -> list[float]:
        return [self.t, self.cores, self.throttled_share]

    @classmethod
    def from_json(cls, raw: Sequence[Any]) -> CpuSample:
        t, cores, throttled = raw
        return cls(float(t), float(cores), float(throttled))


@dataclass(frozen=True)
class CpuTimeline:
    """Per-pod CPU and throttling over the events run, on the load timeline's axis."""

    interval_s: float
    pods: dict[str, tuple[CpuSample, ...]] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)  # pod -> limit, cores

    def to_json(self) -> Json:
        return {
            "interval_s": self.interval_s,
            "pods": {pod: [x.to_json() for x in xs] for pod, xs in self.pods.items()},
            "limits": dict(self.limits),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CpuTimeline:
        return cls(
            interval_s=float(raw["interval_s"]),
            pods={
                str(pod): tuple(CpuSample.from_json(x) for x in xs)
                for pod, xs in raw["pods"].items()
            },
            limits=floats_from_json(raw.get("limits", {})),
        )


@dataclass(frozen=True)
class FixedRate:
    """The open-loop run: the same offered rate in every mode, judged by an objective.

    Latency counts from each call's intended send time, so a pod that stalls cannot
    hide behind the calls it kept from being sent."""

    rate: float  # calls/s offered
    objective_ms: float
    calls: int
    dropped: int  # not sent: the loader's in-flight cap was reached
    p50_ms: float
    p99_ms: float
    within_objective: float  # share of the calls asked for that ended well within it
    goodput_per_s: float  # such calls per second
    timeouts: int  # DEADLINE_EXCEEDED
    failures: int  # calls with any status other than OK or FAILED_PRECONDITION
    status_counts: dict[str, int]
    pods: tuple[PodCpu, ...] = ()

    def busiest(self, service: str) -> PodCpu | None:
        """The pod of ``service`` that used the most CPU."""
        mine = [p for p in self.pods if service_of(p.pod) == service]
        return max(mine, key=lambda p: p.cores, default=None)

    def to_json(self) -> Json:
        return {
            "rate": self.rate,
            "objective_ms": self.objective_ms,
            "calls": self.calls,
            "dropped": self.dropped,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "within_objective": self.within_objective,
            "goodput_per_s": self.goodput_per_s,
            "timeouts": self.timeouts,
            "failures": self.failures,
            "status_counts": dict(self.status_counts),
            "pods": [p.to_json() for p in self.pods],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FixedRate:
        return cls(
            rate=float(raw["rate"]),
            objective_ms=float(raw["objective_ms"]),
            calls=int(raw["calls"]),
            dropped=int(raw["dropped"]),
            p50_ms=float(raw["p50_ms"]),
            p99_ms=float(raw["p99_ms"]),
            within_objective=float(raw["within_objective"]),
            goodput_per_s=float(raw["goodput_per_s"]),
            timeouts=int(raw["timeouts"]),
            failures=int(raw["failures"]),
            status_counts=counts_from_json(raw["status_counts"]),
            pods=pods_from_json(raw.get("pods", [])),
        )


@dataclass(frozen=True)
class OfferedRate:
    """How the fixed rate was chosen: a share of what the replicas can take together.

    Capacity is derived, not guessed: each service's CPU per call (measured in the
    first mode's closed-loop run, from the pods' cgroups) against the CPU its
    replicas may use (their limits); the service that runs out first bounds it."""

    rate: float  # calls/s offered in every mode
    load_factor: float  # rate / capacity (None-free: 1.0 when --rate was given)
    capacity_per_s: float | None  # None: --rate was given, nothing derived
    bottleneck: str | None  # the service that bounds the capacity
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)  # service -> ms
    measured_in: str | None = None  # the mode whose run measured the CPU per call

    def to_json(self) -> Json:
        return {
            "rate": self.rate,
            "load_factor": self.load_factor,
            "capacity_per_s": self.capacity_per_s,
            "bottleneck": self.bottleneck,
            "cpu_ms_per_call": dict(self.cpu_ms_per_call),
            "measured_in": self.measured_in,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OfferedRate:
        bottleneck, measured_in = raw.get("bottleneck"), raw.get("measured_in")
        return cls(
            rate=float(raw["rate"]),
            load_factor=float(raw["load_factor"]),
            capacity_per_s=optional_float(raw.get("capacity_per_s")),
            bottleneck=None if bottleneck is None else str(bottleneck),
            cpu_ms_per_call=floats_from_json(raw.get("cpu_ms_per_call", {})),
            measured_in=None if measured_in is None else str(measured_in),
        )


@dataclass(frozen=True)
class ModeCost:
    """What the steady run cost the apps and the mode's proxies, apart.

    Proxies are whatever the mode puts on a call's path (the L4 service proxy, the
    sidecars); the lab process's own DNS and xDS servers count in neither. Per 1,000
    calls of the load generator (each a PlaceOrder through the whole chain)."""

    app_cpu_s_per_1000_calls: float | None
    proxy_cpu_s_per_1000_calls: float | None  # None: the mode runs no proxy
    proxies: int
    proxy_rss_mib: float | None  # mean resident memory per proxy, at the run's end
    # Requests the sidecars sent to the callees' pods, from Envoy's per-endpoint
    # counters (0 where the proxies count none), and each pod's share of them.
    proxied_requests: int = 0
    proxy_shares: dict[str, dict[str, float]] = field(default_factory=dict)

    def proxy_cpu_per_1000_rps(self, calls: int) -> float | None:
        """vCPU one sidecar uses per 1,000 requests/s through it, Istio's unit: every
        proxied request passes two sidecars (the caller's and the callee's)."""
        if self.proxy_cpu_s_per_1000_calls is None or not self.proxied_requests or not calls:
            return None
        proxy_cpu_s = self.proxy_cpu_s_per_1000_calls * calls / 1000
        return proxy_cpu_s / (2 * self.proxied_requests) * 1000

    def to_json(self) -> Json:
        return {
            "app_cpu_s_per_1000_calls": self.app_cpu_s_per_1000_calls,
            "proxy_cpu_s_per_1000_calls": self.proxy_cpu_s_per_1000_calls,
            "proxies": self.proxies,
            "proxy_rss_mib": self.proxy_rss_mib,
            "proxied_requests": self.proxied_requests,
            "proxy_shares": {hop: dict(pods) for hop, pods in self.proxy_shares.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ModeCost:
        return cls(
            app_cpu_s_per_1000_calls=optional_float(raw["app_cpu_s_per_1000_calls"]),
            proxy_cpu_s_per_1000_calls=optional_float(raw["proxy_cpu_s_per_1000_calls"]),
            proxies=int(raw["proxies"]),
            proxy_rss_mib=optional_float(raw["proxy_rss_mib"]),
            proxied_requests=int(raw.get("proxied_requests", 0)),
            proxy_shares={
                str(hop): floats_from_json(pods)
                for hop, pods in raw.get("proxy_shares", {}).items()
            },
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
    pods: tuple[PodCpu, ...] = ()  # per-pod CPU from the cgroups; empty without limits
    cost: ModeCost | None = None  # None: an older lab.json

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
            "pods": [p.to_json() for p in self.pods],
            "cost": None if self.cost is None else self.cost.to_json(),
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
            cpu_s_per_1000_calls=optional_float(raw["cpu_s_per_1000_calls"]),
            failures=int(raw["failures"]),
            status_counts=counts_from_json(raw.get("status_counts", {})),
            pods=pods_from_json(raw.get("pods", [])),
            cost=None if raw.get("cost") is None else ModeCost.from_json(raw["cost"]),
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
            first_traffic_s=optional_float(raw["first_traffic_s"]),
            fair_share_s=optional_float(raw["fair_share_s"]),
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
class NodeClientShares:
    """A Node.js client's calls over the same inventory pods (``shop.lab.node_client``:
    grpc-js with the headless fix's service config, or grpc-js-xds for ``xds:///``)."""

    target: str
    calls: int
    failures: int
    shares: dict[str, float]  # pod -> fraction of the OK calls

    def to_json(self) -> Json:
        return {
            "target": self.target,
            "calls": self.calls,
            "failures": self.failures,
            "shares": dict(self.shares),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> NodeClientShares:
        return cls(
            target=str(raw["target"]),
            calls=int(raw["calls"]),
            failures=int(raw["failures"]),
            shares=floats_from_json(raw["shares"]),
        )


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
    fixed_rate: FixedRate | None = None
    cpu_timeline: CpuTimeline | None = None  # None: the pods had no cgroups
    # Attempts the servers saw arrive as retries (grpc_server_retried_total), per
    # service, over the events run: the failures a retry hid from the caller.
    retries: dict[str, int] = field(default_factory=dict)
    # None: the mode has no target a Node.js client takes (or an older lab.json).
    node_client: NodeClientShares | None = None

    def to_json(self) -> Json:
        return {
            "description": self.description,
            "steady": self.steady.to_json(),
            "fixed_rate": None if self.fixed_rate is None else self.fixed_rate.to_json(),
            "scale_up": self.scale_up.to_json(),
            "rollout": self.rollout.to_json(),
            "scale_down": self.scale_down.to_json(),
            "failures_total": self.failures_total,
            "status_counts": dict(self.status_counts),
            "timeline": self.timeline.to_json(),
            "events": [e.to_json() for e in self.events],
            "control_plane": dict(self.control_plane),
            "cpu_timeline": None if self.cpu_timeline is None else self.cpu_timeline.to_json(),
            "retries": dict(self.retries),
            "node_client": None if self.node_client is None else self.node_client.to_json(),
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> ModeResult:
        fixed_rate, cpu_timeline = raw.get("fixed_rate"), raw.get("cpu_timeline")
        node_client = raw.get("node_client")
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
            fixed_rate=None if fixed_rate is None else FixedRate.from_json(fixed_rate),
            cpu_timeline=None if cpu_timeline is None else CpuTimeline.from_json(cpu_timeline),
            retries=counts_from_json(raw.get("retries", {})),
            node_client=None if node_client is None else NodeClientShares.from_json(node_client),
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
class AddedLatency:
    """p50 and p99 of ``mode`` minus those of ``baseline``, at the same offered rate."""

    mode: str
    baseline: str
    p50_ms: float
    p99_ms: float

    def describe(self) -> str:
        return (
            f"{self.mode} vs {self.baseline}: p50 {self.p50_ms:+.1f} ms, p99 {self.p99_ms:+.1f} ms"
        )


@dataclass(frozen=True)
class LabResults:
    """A whole lab run: its settings, the machine, and each mode in the order run."""

    modes: Sequence[ModeResult]
    # The settings as recorded (LabSettings.to_json()); any JSON values, shown as they are.
    settings: dict[str, Any] = field(default_factory=dict)
    machine: Machine | None = None
    offered: OfferedRate | None = None  # how the fixed rate was chosen

    def mode(self, name: str) -> ModeResult:
        (found,) = [m for m in self.modes if m.name == name]
        return found

    def added_latency(self, mode: str, baseline: str) -> AddedLatency | None:
        """What ``mode`` adds to a call's p50 and p99 over ``baseline`` at the same
        offered rate (the fixed-rate runs); None unless both ran it."""
        names = {m.name for m in self.modes}
        if mode not in names or baseline not in names:
            return None
        measured, base = self.mode(mode).fixed_rate, self.mode(baseline).fixed_rate
        if measured is None or base is None:
            return None
        return AddedLatency(
            mode, baseline, measured.p50_ms - base.p50_ms, measured.p99_ms - base.p99_ms
        )

    def mesh_latency(self, mesh: str = "istio") -> list[AddedLatency]:
        """The mesh's added latency over the proxy-less answers that ran."""
        found = (self.added_latency(mesh, base) for base in ("proxyless", "headless"))
        return [added for added in found if added is not None]

    def mesh_cost_lines(self) -> list[str]:
        """What the mesh cost, a line each (the terminal prints them, the page makes
        sentences of them): its added latency, then each sidecar's CPU in Istio's unit."""
        lines = [f"at the fixed rate, {added.describe()}" for added in self.mesh_latency()]
        for mode in self.modes:
            cost = mode.steady.cost
            per_sidecar = None if cost is None else cost.proxy_cpu_per_1000_rps(mode.steady.calls)
            if cost is not None and per_sidecar is not None:
                lines.append(
                    f"{mode.name}: each sidecar used {per_sidecar:.2f} vCPU per 1,000 "
                    f"requests/s through it ({cost.proxied_requests:,} requests proxied, "
                    "each through two sidecars)"
                )
        return lines

    def to_json(self) -> Json:
        return {
            "settings": dict(self.settings),
            **({"machine": self.machine.to_json()} if self.machine is not None else {}),
            **({"offered": self.offered.to_json()} if self.offered is not None else {}),
            "modes": {m.name: m.to_json() for m in self.modes},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LabResults:
        machine, offered = raw.get("machine"), raw.get("offered")
        return cls(
            modes=tuple(ModeResult.from_json(name, m) for name, m in raw["modes"].items()),
            settings=dict(raw.get("settings") or {}),
            machine=None if machine is None else Machine.from_json(machine),
            offered=None if offered is None else OfferedRate.from_json(offered),
        )
