"""Scenarios: the lab's cluster with one pod that is not like the others.

Once calls are spread evenly, the next trouble is pods that are not equal. Each
scenario runs in every mode it applies to, on the lab's usual cluster (the chart's pod
limits, PostgreSQL, one gateway, ``orders`` orders pods and ``inventory_start``
inventory pods), with the last inventory pod made different:

- ``slow-pod``: once every pod is ready, the slow pod's CPU limit is cut to a
  ``slow_factor``-th of its peers' (its cgroup's CFS quota, as an in-place resize or a
  noisy node would leave it), then the closed loop measures each pod's share and the
  latency, and the open loop at a fixed rate judges every call by the objective. The
  rate is ``load_factor`` of what the pods could take if each got calls in proportion
  to its CPU, so a mode that spreads by load can meet it and an even spread overloads
  the slow pod.
- ``failing-pod``: the failing pod answers every call at once with UNAVAILABLE
  (``SHOP_FAULT_STATUS``) while its health stays SERVING, from its start. The closed
  loop runs ``failing_s`` seconds; every pod's own counters, read every bucket, tell
  how many attempts each answered and how many arrived as retries, and when the
  failing pod stopped getting any (ejected) or that it never did.
- ``new-pod-wait``: what a new pod waits for, part by part. Under a closed loop one
  inventory pod joins one other, published right after the one client's connection
  was renewed (the worst moment, see ``_wait_point``), and the timeline says when it
  got its first call and 80% of an even share. The headless mode is run at the lab's
  settings and then with one part changed at a time (:data:`WAIT_SWEEP`): the servers'
  max connection age, the clients' minimum re-resolution interval, the DNS TTL; then
  at the chart's own defaults; and the xDS modes beside it (the control plane's push
  to gRPC clients, and to Envoy sidecars).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shop.lab import analysis, capacity
from shop.lab.attempts import AttemptSample, AttemptSampler, last_attempt_s, totals
from shop.lab.modes import mode_class
from shop.lab.modes.headless_no_maxage import HeadlessNoMaxAge
from shop.lab.results import Machine, OfferedRate, SteadyState, Timeline
from shop.lab.runner import Lab, LabSettings, ModeRun, Progress
from shop.lab.scenario_results import (
    FailingPodMode,
    ScenarioMode,
    ScenarioResults,
    SlowPodMode,
    WaitPoint,
)
from shop.local.cgroups import PodLimits

SERVICE = "inventory"
# Time a new pod gets to start and report SERVING within a sweep point's load.
STARTUP_S = 15.0
GRPC_SERVICE = "shop.v1.Inventory"
FAULT = "UNAVAILABLE"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    question: str
    # The modes it is run in by default, in order; the first sets the offered rate.
    modes: tuple[str, ...]


SLOW_POD = Scenario(
    "slow-pod",
    "a slow pod",
    "One inventory pod has a quarter of its peers' CPU limit: who keeps sending it a "
    "third of the calls, and what does that do to latency?",
    ("clusterip", "headless", "headless-wrr", "istio", "proxyless"),
)
FAILING_POD = Scenario(
    "failing-pod",
    "a failing pod",
    "One inventory pod answers every call with UNAVAILABLE at once while its health "
    "says SERVING: how many calls fail for the caller, and is the pod ever ejected?",
    ("clusterip", "headless", "headless-outlier", "headless-wrr", "istio", "proxyless"),
)
NEW_POD_WAIT = Scenario(
    "new-pod-wait",
    "what a new pod waits for",
    "After a scale-up, how long until the new pod gets its fair share, as a function of "
    "the max connection age, the clients' re-resolution interval and the DNS TTL, beside "
    "xDS?",
    ("headless", "proxyless", "istio"),
)
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SLOW_POD, FAILING_POD, NEW_POD_WAIT)}
SCENARIO_NAMES = tuple(SCENARIOS)


# What a sweep point changes from the lab's headless mode.
WAIT_LAB = "lab's headless"
WAIT_AGE = "max connection age"
WAIT_RERESOLUTION = "re-resolution interval"
WAIT_TTL = "DNS TTL"
WAIT_CHART = "chart defaults"
WAIT_XDS = "xDS push"


@dataclass(frozen=True)
class WaitSpec:
    """One point to run: a mode and, for headless, its settings."""

    mode: str
    varied: str
    max_age_s: float | None = None
    grace_s: float | None = None
    reresolution_s: float | None = None
    ttl_s: int | None = None

    @property
    def name(self) -> str:
        if self.varied == WAIT_LAB or self.varied == WAIT_XDS:
            return self.mode
        if self.varied == WAIT_CHART:
            return f"{self.mode} (chart defaults)"
        label, value = {
            WAIT_AGE: ("age", self.max_age_s),
            WAIT_RERESOLUTION: ("re-resolution", self.reresolution_s),
            WAIT_TTL: ("TTL", self.ttl_s),
        }[self.varied]
        return f"{self.mode} {label} {value:g} s"

    @property
    def phase_wait_s(self) -> float:
        """The longest wait for the client's connection to age out (gRPC jitters the age
        by up to 10%), or its re-resolution to be allowed, whichever is later."""
        return max(1.1 * (self.max_age_s or 0.0), self.reresolution_s or 0.0)

    @property
    def window_s(self) -> float:
        """How long the new pod is watched: past every wait this point's settings allow
        (the next age-out, its grace, a re-resolution), with room to spare."""
        return max(10.0, self.phase_wait_s + (self.grace_s or 0.0) + 4.0)

    def pod_env(self, replicas: Mapping[str, int]) -> dict[tuple[str, int], dict[str, str]]:
        """The settings as environment, for every pod that may run (one added)."""
        if self.mode != "headless":
            return {}
        env: dict[tuple[str, int], dict[str, str]] = {}
        for service, count in replicas.items():
            for index in range(count + 1):
                pod: dict[str, str] = {}
                if self.reresolution_s is not None:  # clients: gateway and orders
                    pod["SHOP_DNS_MIN_RERESOLUTION_S"] = f"{self.reresolution_s:g}"
                if service != "gateway" and self.max_age_s is not None:  # called servers
                    pod["SHOP_MAX_CONNECTION_AGE_S"] = f"{self.max_age_s:g}"
                    pod["SHOP_MAX_CONNECTION_AGE_GRACE_S"] = f"{self.grace_s or 0:g}"
                env[(service, index)] = pod
        return env


def _headless(varied: str, age: float = 2, reresolution: float = 1, ttl: int = 1) -> WaitSpec:
    # The lab's headless: 2 s age, 1 s grace, 1 s re-resolution, TTL 1 s.
    return WaitSpec("headless", varied, age, 1.0, reresolution, ttl)


# The default sweep: the lab's headless, one part changed at a time, the chart's own
# defaults (30 s age, 5 s grace, 5 s re-resolution; CoreDNS answers a headless Service
# with a 5 s TTL), and the two xDS modes.
WAIT_SWEEP: tuple[WaitSpec, ...] = (
    _headless(WAIT_LAB),
    *(_headless(WAIT_AGE, age=age) for age in (1, 4, 8)),
    *(_headless(WAIT_RERESOLUTION, reresolution=r) for r in (4, 8)),
    _headless(WAIT_TTL, ttl=30),
    WaitSpec("headless", WAIT_CHART, 30.0, 5.0, 5.0, 5),
    WaitSpec("proxyless", WAIT_XDS),
    WaitSpec("istio", WAIT_XDS),
)


@dataclass(frozen=True)
class ScenarioSettings:
    lab: LabSettings  # the cluster, loads and objective (inventory_start: pods of the service)
    slow_factor: int = 4
    # WRR needs a report window, its blackout and a weight update before weights act.
    settle_s: float = 4.0
    failing_s: float = 15.0
    # A failing pod that got no attempt for this long before the run ended was ejected.
    quiet_s: float = 3.0
    # new-pod-wait: the points run (those of the modes asked for).
    sweep: tuple[WaitSpec, ...] = WAIT_SWEEP

    def to_json(self) -> dict[str, object]:
        return {
            **self.lab.to_json(),
            "slow_factor": self.slow_factor,
            "settle_s": self.settle_s,
            "failing_s": self.failing_s,
            "quiet_s": self.quiet_s,
            "sweep": [spec.name for spec in self.sweep],
        }


def odd_pod(settings: LabSettings) -> tuple[str, int]:
    """The pod a scenario makes different: the service's last one."""
    index = settings.inventory_start - 1
    return f"{SERVICE}-{index}", index


class ScenarioLab(Lab):
    """Runs one scenario in each of its modes."""

    def __init__(
        self,
        settings: ScenarioSettings,
        progress: Progress,
        announce: Progress | None = None,
    ) -> None:
        super().__init__(settings.lab, progress, announce)
        self.scenario_settings = settings

    async def run_scenario(
        self, scenario: Scenario, modes: list[str], machine: Machine | None = None
    ) -> ScenarioResults:
        measured: list[ScenarioMode] = []
        try:
            if scenario is NEW_POD_WAIT:
                # Points, not modes: every point of the sweep whose mode was asked for.
                for index, spec in enumerate(self.scenario_settings.sweep):
                    if spec.mode in modes:
                        measured.append(await self.new_pod_wait(spec, index))
            elif scenario is SLOW_POD:
                for name in modes:
                    measured.append(await self.slow_pod(name))
            else:
                for name in modes:
                    measured.append(await self.failing_pod(name))
        finally:
            if self.postgres is not None:
                await asyncio.to_thread(self.postgres.stop)
        return ScenarioResults(
            scenario=scenario.name,
            modes=tuple(measured),
            settings=self.scenario_settings.to_json(),
            machine=machine,
            offered=self.offered,
        )

    # --- slow pod -----------------------------------------------------------------------

    def slow_limits(self) -> tuple[PodLimits, PodLimits]:
        """(the peers' limits, the slow pod's)."""
        limits = self.settings.limits
        if limits is None or SERVICE not in limits:
            raise ValueError("the slow-pod scenario needs pod CPU limits (cgroups)")
        peer = limits[SERVICE]
        factor = self.scenario_settings.slow_factor
        # The kubelet's floor for a quota is 1 ms per 100 ms period: 10m.
        return peer, PodLimits(max(10, peer.cpu_millis // factor), peer.memory_mib)

    def offer_by_capacity(self, mode: str, steady: SteadyState) -> OfferedRate:
        """The fixed rate, set by the first mode: ``load_factor`` of what the pods could
        take if each got calls in proportion to its CPU limit."""
        if self.offered is None:
            s = self.settings
            peer, slow = self.slow_limits()
            assert s.limits is not None
            cores = {service: limit.cpu_cores for service, limit in s.limits.items()}
            n = s.inventory_start
            cores[SERVICE] = ((n - 1) * peer.cpu_cores + slow.cpu_cores) / n
            self.offered = capacity.derive(
                steady, s.steady_s, s.steady_replicas, cores, s.load_factor, mode
            )
            self.announce(capacity.describe(self.offered, s.objective_ms))
        return self.offered

    async def slow_pod(self, name: str) -> SlowPodMode:
        s = self.settings
        slow_pod, _ = odd_pod(s)
        peer, slow = self.slow_limits()
        run = ModeRun(name, s, self.progress, await self.database_url(name))
        async with run:
            self.progress(f"{name}: starting ({run.mode.description})")
            await run.start()
            assert run.cluster is not None and run.cluster.pod_cgroups is not None
            # Cut once the pod is up: a pod slowed from its start would also start slowly.
            run.cluster.pod_cgroups.pod(slow_pod, slow)
            self.progress(f"{name}: {slow_pod} limited to {slow.cpu_millis}m; settling")
            settle = run.load(self.scenario_settings.settle_s, {})
            await settle.start()
            await settle.result()
            steady = await run.steady()
            fixed = await run.fixed_rate(self.offer_by_capacity(name, steady).rate)
            return SlowPodMode(
                name=name,
                description=mode_class(name).description,
                slow_pod=slow_pod,
                slow_cores=slow.cpu_cores,
                peer_cores=peer.cpu_cores,
                steady=steady,
                fixed_rate=fixed,
            )

    # --- failing pod --------------------------------------------------------------------

    async def new_pod_wait(self, spec: WaitSpec, index: int) -> WaitPoint:
        return await _wait_point(self, spec, index)

    async def failing_pod(self, name: str) -> FailingPodMode:
        s = self.settings
        sc = self.scenario_settings
        failing_pod, index = odd_pod(s)
        run = ModeRun(
            name,
            s,
            self.progress,
            await self.database_url(name),
            pod_env={(SERVICE, index): {"SHOP_FAULT_STATUS": FAULT}},
        )
        async with run:
            self.progress(f"{name}: starting ({run.mode.description})")
            await run.start()

            def targets() -> Mapping[str, str]:
                return {r.pod: r.metrics_addr for r in run.live_replicas() if r.service == SERVICE}

            sampler = AttemptSampler(targets, GRPC_SERVICE, s.bucket_s)
            self.progress(f"{name}: {failing_pod} answers {FAULT}; load for {sc.failing_s:.0f} s")
            load = run.load(sc.failing_s, s.steady_callees)
            await sampler.sample()  # the counters before the first call
            sampler.start()
            try:
                await load.start()
                report = await load.result()
            finally:
                await sampler.stop()
                await load.kill()
            if report.timeline is None:
                raise RuntimeError("shop load reported no timeline")
            start = report.timeline.start_unix
            stopped = last_attempt_s(sampler.samples, failing_pod, start)
            ejected = stopped is not None and sc.failing_s - stopped >= sc.quiet_s
            return FailingPodMode(
                name=name,
                description=mode_class(name).description,
                failing_pod=failing_pod,
                duration_s=sc.failing_s,
                calls=report.calls,
                calls_per_s=report.calls_per_s,
                p99_ms=report.p99_ms,
                failures=report.failures,
                status_counts=report.status_counts,
                attempts=totals(sampler.samples),
                stopped_after_s=stopped,
                ejected=ejected,
                attempt_timeline=attempt_timeline(sampler.samples, start),
                caller_timeline=caller_timeline(report.timeline),
            )


async def _wait_point(lab: ScenarioLab, spec: WaitSpec, index: int) -> WaitPoint:
    """One sweep point: the mode at ``spec``'s settings, one inventory pod added under a
    closed loop, its first call and fair share read off the load's timeline.

    The wait for a new pod under headless depends on where each client connection is in
    its age cycle when the pod appears, anywhere from nothing to the whole age. So the
    point has one client (one orders pod) and one inventory pod before the scale-up:
    one connection, whose age-out the lab sees as the client's DNS query for
    inventory's name. The new pod is started, and published right after such a query:
    the connection has just been renewed, and the pod waits for the longest the
    settings allow (what an operator must plan for). The xDS modes are pushed the new
    pod at once, whenever it comes."""
    s = dataclasses.replace(lab.settings, orders=1, inventory_start=1)
    replicas = s.steady_replicas
    new = replicas[SERVICE]
    new_pod = f"{SERVICE}-{new}"
    run = ModeRun(
        spec.mode,
        s,
        lab.progress,
        # A database per point: several points run the same mode.
        await lab.database_url(f"wait-{index}"),
        pod_env=spec.pod_env(replicas),
    )
    headless = run.mode if isinstance(run.mode, HeadlessNoMaxAge) else None
    if headless is not None:
        if spec.ttl_s is not None:
            headless.dns_ttl_s = spec.ttl_s
        # orders must be inventory's only client that resolves it: the gateway keeps a
        # channel to inventory too (for ListProducts, which this load never calls), and its
        # re-resolutions would be mistaken for the orders client's.
        gateway = run.pod_env.setdefault(("gateway", 0), {})
        gateway["SHOP_INVENTORY_TARGET"] = run.plan.grpc_addr(SERVICE, 0)
    settle = lab.scenario_settings.settle_s
    async with run:
        lab.progress(f"{spec.name}: starting")
        await run.start()
        # Long enough for the new pod's start (up to STARTUP_S), the wait for an age-out
        # and the window; the load reports when it ends, not before.
        duration = settle + STARTUP_S + spec.phase_wait_s + spec.window_s
        load = run.load(duration, {"orders": 1, SERVICE: new + 1})
        await load.start()
        try:
            await asyncio.sleep(settle)
            lab.progress(f"{spec.name}: {new_pod} starting (not published yet)")
            await run.start_unpublished(SERVICE, new)
            if headless is not None:
                lab.progress(f"{spec.name}: waiting for the client's connection to age out")
                resolved = headless.resolutions(SERVICE)
                await _until(
                    lambda: headless.resolutions(SERVICE) > resolved, spec.phase_wait_s + 5
                )
            await run.publish(SERVICE, new)
            published_at = time.time()
            lab.progress(f"{spec.name}: {new_pod} published, watching {spec.window_s:g} s")
            report = await load.result()
        finally:
            await load.kill()
        if report.timeline is None:
            raise RuntimeError("shop load reported no timeline")
        timeline = report.timeline
        since = published_at - timeline.start_unix
        until = since + spec.window_s
        covered = timeline.buckets[-1].t + timeline.bucket_s if timeline.buckets else 0.0
        if covered < until:
            raise RuntimeError(f"{spec.name}: the load ended before the window did")
        return WaitPoint(
            name=spec.name,
            mode=spec.mode,
            varied=spec.varied,
            max_age_s=spec.max_age_s,
            grace_s=spec.grace_s,
            reresolution_s=spec.reresolution_s,
            ttl_s=None if spec.ttl_s is None else float(spec.ttl_s),
            first_traffic_s=analysis.rounded(
                analysis.time_to_first_traffic(timeline, SERVICE, [new_pod], since, until)
            ),
            fair_share_s=analysis.rounded(
                analysis.time_to_fair_share(timeline, SERVICE, [new_pod], new + 1, since, until)
            ),
            window_s=spec.window_s,
        )


async def _until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:g} s")
        await asyncio.sleep(poll_s)


def attempt_timeline(
    samples: list[AttemptSample], start_unix: float
) -> tuple[tuple[float, dict[str, int]], ...]:
    """Attempts each pod answered between consecutive samples, at the later sample's
    time (s after ``start_unix``)."""
    rows = []
    for before, after in itertools.pairwise(samples):
        pods = {
            pod: after.pods[pod].answered - before.pods[pod].answered
            for pod in after.pods
            if pod in before.pods
        }
        rows.append((round(after.unix - start_unix, 2), pods))
    return tuple(rows)


def caller_timeline(timeline: Timeline) -> tuple[tuple[float, int, int], ...]:
    return tuple((b.t, b.calls, b.failures) for b in timeline.buckets)
