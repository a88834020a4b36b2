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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from shop.lab import capacity
from shop.lab.attempts import AttemptSample, AttemptSampler, last_attempt_s, totals
from shop.lab.modes import mode_class
from shop.lab.results import Machine, OfferedRate, SteadyState, Timeline
from shop.lab.runner import Lab, LabSettings, ModeRun, Progress
from shop.lab.scenario_results import FailingPodMode, ScenarioMode, ScenarioResults, SlowPodMode
from shop.local.cgroups import PodLimits

log = logging.getLogger(__name__)

SERVICE = "inventory"
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
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SLOW_POD, FAILING_POD)}
SCENARIO_NAMES = tuple(SCENARIOS)


@dataclass(frozen=True)
class ScenarioSettings:
    lab: LabSettings  # the cluster, loads and objective (inventory_start: pods of the service)
    slow_factor: int = 4
    # WRR needs a report window, its blackout and a weight update before weights act.
    settle_s: float = 4.0
    failing_s: float = 15.0
    # A failing pod that got no attempt for this long before the run ended was ejected.
    quiet_s: float = 3.0

    def to_json(self) -> dict[str, object]:
        return {
            **self.lab.to_json(),
            "slow_factor": self.slow_factor,
            "settle_s": self.settle_s,
            "failing_s": self.failing_s,
            "quiet_s": self.quiet_s,
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
            for name in modes:
                if scenario is SLOW_POD:
                    measured.append(await self.slow_pod(name))
                else:
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
        try:
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
        finally:
            with contextlib.suppress(Exception):
                await run.close()

    # --- failing pod --------------------------------------------------------------------

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
        try:
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
        finally:
            with contextlib.suppress(Exception):
                await run.close()


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
