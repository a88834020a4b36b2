"""Runs one balancing mode end to end and measures it.

For a mode: start its infrastructure, start the replicas (inventory, then orders,
then the gateway, each only once the previous service's endpoints are published),
each in a cgroup with the chart's CPU and memory limits, on a PostgreSQL database of
its own, then three load runs from a separate ``shop load`` process:

1. steady state, closed loop: per-pod shares, throughput, latency, CPU per 1,000
   calls, per-pod CPU and throttling;
2. fixed rate, open loop: the same offered rate in every mode (see
   ``shop.lab.capacity``), judged by a latency objective, with per-pod CPU;
   then, where the mode has a target a client outside the pods can take (headless
   DNS, xDS), a Node.js client's calls over the inventory pods
   (``shop.lab.node_client``);
3. events, on one timeline: inventory scales up (2 -> 4 by default), then every
   inventory replica is restarted one at a time (a rollout), then one is removed;
   per-pod CPU over time, and the retries the servers saw.

Everything started is stopped at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shop.lab import analysis, capacity
from shop.lab.endpoints import Endpoint, ReadinessTracker
from shop.lab.load import FixedRateSpec, LoadProcess, LoadReport, LoadSpec
from shop.lab.modes import LabCluster, create_mode
from shop.lab.node_client import run_node_shares
from shop.lab.podcpu import PodCpuSampler
from shop.lab.results import (
    Event,
    FixedRate,
    LabResults,
    Machine,
    ModeCost,
    ModeResult,
    NodeClientShares,
    OfferedRate,
    PodCpu,
    ScaleUp,
    SteadyState,
)
from shop.lab.retries import RetryTally, scrape_retried
from shop.loadgen.stats import shares
from shop.local.addresses import AddressPlan, free_net
from shop.local.cgroups import CHART_LIMITS, PodCgroup, PodLimits
from shop.local.cluster import ClusterSpec, LocalCluster, Replica
from shop.local.cpu import live_cpu_s, rss_bytes
from shop.local.postgres import PostgresServer, start_postgres

log = logging.getLogger(__name__)

# Health/Check calls the Node.js client makes per mode: a few hundred show its shares.
NODE_CALLS = 300

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabSettings:
    data_dir: Path
    orders: int = 2
    inventory_start: int = 2
    inventory_scaled: int = 4
    steady_s: float = 10.0
    scale_window_s: float = 15.0
    settle_s: float = 3.0
    concurrency: int = 16
    workload: str = "place"
    bucket_s: float = 0.5
    drain_delay_s: float = 1.0
    shutdown_grace_s: float = 5.0
    # Like a Deployment's minReadySeconds: a restarted pod counts as available this
    # long after it is ready, and only then is the next one restarted. Clients need a
    # moment to connect to the new pod (their reconnect back-off is capped at 1 s, see
    # shop.runtime.channels); taking the next pod away before that leaves a client whose
    # only other backend just left with none ready.
    min_ready_s: float = 2.0
    # "postgres": a PostgreSQL server for the whole run, a database per mode, as the
    # chart deploys (more replicas, more capacity); "sqlite": a file per service that
    # its replicas share (embedded: replicas contend for its one writer).
    database: str = "postgres"
    # Per-service pod limits, enforced with cgroups; None: no limits (no root needed,
    # but then one busy pod can use the whole machine and pinning looks free).
    limits: Mapping[str, PodLimits] | None = field(default_factory=lambda: dict(CHART_LIMITS))
    # The fixed-rate run: calls/s offered (None: load_factor of the derived capacity),
    # the latency objective each call is judged by, and each call's deadline.
    rate: float | None = None
    load_factor: float = 0.6
    objective_ms: float = 250.0
    deadline_s: float = 1.0

    @property
    def steady_replicas(self) -> dict[str, int]:
        """Replicas per service before the scale-up."""
        return {"gateway": 1, "orders": self.orders, "inventory": self.inventory_start}

    @property
    def steady_callees(self) -> dict[str, int]:
        """The same for the called services, whose per-pod share the loader reports."""
        return {s: n for s, n in self.steady_replicas.items() if s in ("orders", "inventory")}

    def to_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "inventory_start": self.inventory_start,
            "inventory_scaled": self.inventory_scaled,
            "steady_s": self.steady_s,
            "scale_window_s": self.scale_window_s,
            "concurrency": self.concurrency,
            "workload": self.workload,
            "bucket_s": self.bucket_s,
            "drain_delay_s": self.drain_delay_s,
            "shutdown_grace_s": self.shutdown_grace_s,
            "min_ready_s": self.min_ready_s,
            "database": self.database,
            "limits": (
                None
                if self.limits is None
                else {service: limit.describe() for service, limit in self.limits.items()}
            ),
            "rate": self.rate,
            "load_factor": self.load_factor,
            "objective_ms": self.objective_ms,
            "deadline_s": self.deadline_s,
        }


class ModeRun:
    def __init__(
        self,
        name: str,
        settings: LabSettings,
        progress: Progress,
        database_url: str = "",
        pod_env: Mapping[tuple[str, int], Mapping[str, str]] | None = None,
    ) -> None:
        """``pod_env``: more environment for some pods, (service, index) -> env, after
        the mode's (a scenario's fault on one pod)."""
        self.name = name
        # A copy a scenario may add to before start().
        self.pod_env: dict[tuple[str, int], dict[str, str]] = {
            key: dict(env) for key, env in (pod_env or {}).items()
        }
        self.settings = settings
        self.progress = progress
        self.database_url = database_url
        self.plan = AddressPlan(net=free_net())
        self.work_dir = settings.data_dir / name
        self.mode = create_mode(name, LabCluster(self.plan, self.work_dir))
        self.tracker: ReadinessTracker | None = None
        self.cluster: LocalCluster | None = None
        self.sampler = PodCpuSampler(self.pod_cgroups, settings.bucket_s)
        self.retries = RetryTally()

    # --- set-up -----------------------------------------------------------------------

    def endpoint(self, service: str, index: int) -> Endpoint:
        return Endpoint(f"{service}-{index}", self.plan.ip(service, index), self.plan.grpc_port)

    async def start(self) -> None:
        s = self.settings
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = await self.mode.start()
        self.tracker = ReadinessTracker(self.mode.publishers)
        spec = ClusterSpec(
            replicas=s.steady_replicas,
            plan=self.plan,
            data_dir=self.work_dir,
            database_url=self.database_url,
            limits=s.limits,
            drain_delay_s=s.drain_delay_s,
            shutdown_grace_s=s.shutdown_grace_s,
            extra_env=env.common,
            service_env=env.per_service,
            replica_env=lambda service, index: {
                **env.for_replica(service, index),
                **self.pod_env.get((service, index), {}),
            },
        )
        self.cluster = LocalCluster(spec)
        await asyncio.to_thread(self.cluster.preflight)
        # Dependencies first: each service's endpoints are published before its callers
        # start.
        for service in ("inventory", "orders", "gateway"):
            for index in range(s.steady_replicas[service]):
                await self.start_replica(service, index)
        self.sampler.start()

    async def start_replica(self, service: str, index: int) -> Replica:
        replica = await self.start_unpublished(service, index)
        if service != "gateway":
            await self.publish(service, index)
        return replica

    async def start_unpublished(self, service: str, index: int) -> Replica:
        """Starts a replica and waits until it is SERVING, without adding it to its
        service's endpoints (a scenario chooses the moment; ``publish`` then does)."""
        assert self.cluster is not None
        await self.mode.pod_starting(service, index)
        replica = await asyncio.to_thread(self.cluster.start_replica, service, index)
        await asyncio.to_thread(self.cluster.wait_ready, 60.0, None, replica)
        return replica

    async def publish(self, service: str, index: int) -> None:
        """Like readiness gating EndpointSlices: follows the replica's health and waits
        until routing (DNS, xDS, proxies) knows the pod."""
        assert self.tracker is not None
        endpoint = self.endpoint(service, index)
        self.tracker.watch(service, endpoint)
        pod = endpoint.pod
        await self.tracker.wait_for(service, lambda eps: any(e.pod == pod for e in eps), 30.0)

    async def stop_replica(self, service: str, index: int) -> None:
        assert self.cluster is not None
        replica = next(r for r in self.cluster.replicas_of(service) if r.index == index)
        # The process's retry count is lost with it: read it first.
        self.retries.process_ends(
            replica.pod, await asyncio.to_thread(scrape_retried, replica.metrics_addr)
        )
        self.cluster.signal_replica(replica)
        budget = self.settings.drain_delay_s + self.settings.shutdown_grace_s + 10
        await asyncio.to_thread(self.cluster.wait_exit, replica, budget)

    async def close(self) -> None:
        await self.sampler.stop()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)
        if self.tracker is not None:
            await self.tracker.close()
        await self.mode.close()

    async def __aenter__(self) -> ModeRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stops everything the run started, also after a failure; a failure to stop
        must not hide the one that got here."""
        with contextlib.suppress(Exception):
            await self.close()

    # --- measurements -----------------------------------------------------------------

    def pod_cgroups(self) -> dict[str, PodCgroup]:
        """The cgroup of every pod started so far (none without limits)."""
        if self.cluster is None:
            return {}
        found = ((r.pod, self.cluster.cgroup(r.pod)) for r in self.cluster.replicas)
        return {pod: cgroup for pod, cgroup in found if cgroup is not None}

    def live_replicas(self) -> Iterator[Replica]:
        assert self.cluster is not None
        return (r for r in self.cluster.replicas if r.alive() and not r.stop_requested)

    async def retry_counts(self) -> dict[str, int | None]:
        counts = {}
        for replica in self.live_replicas():
            counts[replica.pod] = await asyncio.to_thread(scrape_retried, replica.metrics_addr)
        return counts

    def app_pids(self) -> list[int]:
        assert self.cluster is not None
        return [r.process.pid for r in self.cluster.replicas if r.process and r.alive()]

    def cpu_s(self) -> CpuSplit:
        """CPU seconds so far of the apps, of the mode's proxies, and of this process,
        which hosts the DNS and xDS servers (what the proxy-less modes pay instead)."""
        return CpuSplit(
            apps=live_cpu_s(self.app_pids()),
            proxies=live_cpu_s(self.mode.proxy_pids()),
            lab=time.process_time(),
        )

    def load(
        self,
        duration_s: float,
        expect: dict[str, int],
        fixed_rate: FixedRateSpec | None = None,
    ) -> LoadProcess:
        assert self.cluster is not None
        spec = LoadSpec(
            target=self.plan.grpc_addr("gateway", 0),
            workload=self.settings.workload,
            concurrency=self.settings.concurrency,
            bucket_s=self.settings.bucket_s,
            token_key=self.cluster.credentials.issuer_key,
        )
        return LoadProcess(spec, duration_s, expect, fixed_rate)

    def window_cpu(self, report: LoadReport, duration_s: float) -> tuple[PodCpu, ...]:
        """Per-pod CPU over the loader's measured window (it measures from its
        timeline's start, with no warm-up)."""
        if report.timeline is None:
            return ()
        start = report.timeline.start_unix
        return self.sampler.window(start, start + duration_s)

    async def steady(self) -> SteadyState:
        s = self.settings
        self.progress(f"{self.name}: steady state ({s.steady_s:.0f} s)")
        # A short unmeasured run first: connections, caches and JITs warm up.
        warmup = self.load(2.0, {})
        await warmup.start()
        await warmup.result()
        cpu_before = self.cpu_s()
        proxied_before = await self.mode.mesh_requests()
        started = s.steady_callees
        load = self.load(s.steady_s, started)
        await load.start()
        report = await load.result()
        cpu = self.cpu_s() - cpu_before
        proxied = _subtract(await self.mode.mesh_requests(), proxied_before)
        pod_shares = _pod_shares(report.per_hop, started)
        return SteadyState(
            calls=report.calls,
            calls_per_s=report.calls_per_s,
            p50_ms=report.p50_ms,
            p99_ms=report.p99_ms,
            shares=pod_shares,
            # The loader was told the replica counts (--expect), so pods that got no
            # call count in its imbalance already.
            imbalance={hop: report.imbalance.get(hop, 0.0) for hop in pod_shares},
            cpu_s_per_1000_calls=_per_1000(cpu.total, report.calls),
            failures=report.failures,
            status_counts=report.status_counts,
            pods=self.window_cpu(report, s.steady_s),
            cost=self.cost(cpu, report.calls, proxied, started),
        )

    def cost(
        self,
        cpu: CpuSplit,
        calls: int,
        proxied: Mapping[str, Mapping[str, int]],
        replicas: Mapping[str, int],
    ) -> ModeCost:
        proxy_pids = self.mode.proxy_pids()
        memory = [m for m in (rss_bytes(pid) for pid in proxy_pids) if m is not None]
        return ModeCost(
            app_cpu_s_per_1000_calls=_per_1000(cpu.apps, calls),
            proxy_cpu_s_per_1000_calls=_per_1000(cpu.proxies, calls) if proxy_pids else None,
            proxies=len(proxy_pids),
            proxy_rss_mib=round(sum(memory) / len(memory) / 2**20, 1) if memory else None,
            proxied_requests=sum(sum(pods.values()) for pods in proxied.values()),
            # Only hops the proxies counted calls at (none in a proxy-less mode).
            proxy_shares=_pod_shares(
                proxied, {h: n for h, n in replicas.items() if sum(proxied.get(h, {}).values())}
            ),
        )

    async def fixed_rate(self, rate: float) -> FixedRate:
        """The open-loop run at ``rate`` calls/s, judged by the objective."""
        s = self.settings
        self.progress(
            f"{self.name}: fixed rate, {rate:g} calls/s for {s.steady_s:.0f} s "
            f"(objective {s.objective_ms:g} ms)"
        )
        spec = FixedRateSpec(rate=rate, objective_ms=s.objective_ms, deadline_s=s.deadline_s)
        load = self.load(s.steady_s, s.steady_callees, spec)
        await load.start()
        report = await load.result()
        return FixedRate(
            rate=rate,
            objective_ms=s.objective_ms,
            calls=report.calls,
            dropped=report.dropped,
            p50_ms=report.p50_ms,
            p99_ms=report.p99_ms,
            within_objective=report.within_objective or 0.0,
            goodput_per_s=report.goodput_per_s,
            timeouts=report.timeouts,
            failures=report.failures,
            status_counts=report.status_counts,
            pods=self.window_cpu(report, s.steady_s),
        )

    async def node_client(self) -> NodeClientShares | None:
        """A Node.js client's calls over the inventory pods, the way this mode's clients
        reach them (the headless fix's service config, or xDS); None where the mode has
        no such target."""
        found = self.mode.node_client_target("inventory", self.plan.grpc_port)
        if found is None:
            return None
        target, env = found
        pods = self.settings.inventory_start
        self.progress(f"{self.name}: a Node.js client over the same pods ({NODE_CALLS} calls)")
        # Warm-up first: a cold channel's first calls all wait for its first connection.
        run = await run_node_shares(target, NODE_CALLS, 4, env, warmup_pods=pods)
        return NodeClientShares(
            target=target,
            calls=run.calls,
            failures=run.failures,
            shares=_pod_shares({"inventory": run.per_pod}, {"inventory": pods})["inventory"],
        )

    async def events(
        self,
        steady: SteadyState,
        fixed_rate: FixedRate | None,
        node_client: NodeClientShares | None = None,
    ) -> ModeResult:
        """The events run (scale-up, rollout, scale-down); with the steady runs, the
        mode's whole result."""
        s = self.settings
        # A restart: the drain delay, a new process starting inside its pod's CPU limit
        # (5-10 s at 250m on a busy machine), then min_ready. Generous: a load that ends
        # before the scale-down would measure no scale-down at all.
        restart_budget = s.drain_delay_s + s.min_ready_s + 8.0
        duration = (
            s.settle_s + s.scale_window_s + s.inventory_scaled * restart_budget
            + s.settle_s + s.settle_s * 2
        )  # fmt: skip
        load = self.load(duration, {"orders": s.orders, "inventory": s.inventory_scaled})
        self.retries.begin(await self.retry_counts())
        started = time.time()
        await load.start()
        events: list[tuple[float, str, str]] = []
        try:
            await asyncio.sleep(s.settle_s)
            self.progress(f"{self.name}: scale-up {s.inventory_start} -> {s.inventory_scaled}")
            await asyncio.gather(
                *(
                    self.start_replica("inventory", i)
                    for i in range(s.inventory_start, s.inventory_scaled)
                )
            )
            # Clocks start when the new pods are ready and in the endpoint set (as with
            # Kubernetes readiness), not when their processes were asked to start.
            scale_up_at = time.time()
            events.append(
                (
                    scale_up_at,
                    "scale-up",
                    f"inventory {s.inventory_start}->{s.inventory_scaled} ready",
                )
            )
            await asyncio.sleep(max(0.0, scale_up_at + s.scale_window_s - time.time()))
            self.progress(f"{self.name}: rollout of {s.inventory_scaled} inventory replicas")
            rollout_start = time.time()
            for index in range(s.inventory_scaled):
                events.append((time.time(), "restart", f"inventory-{index}"))
                await self.stop_replica("inventory", index)
                await self.start_replica("inventory", index)
                await asyncio.sleep(s.min_ready_s)
            rollout_end = time.time()
            await asyncio.sleep(s.settle_s)
            self.progress(f"{self.name}: scale-down")
            last = s.inventory_scaled - 1
            scale_down_at = time.time()
            events.append((scale_down_at, "scale-down", f"inventory-{last}"))
            await self.stop_replica("inventory", last)
            assert self.tracker is not None
            await self.tracker.forget(self.endpoint("inventory", last))
            report = await load.result()
            for pod, count in (await self.retry_counts()).items():
                self.retries.process_ends(pod, count)
        finally:
            await load.kill()
        if report.timeline is None:
            raise RuntimeError("shop load reported no timeline")
        timeline = report.timeline

        def at(unix: float) -> float:
            return unix - timeline.start_unix

        new_pods = [f"inventory-{i}" for i in range(s.inventory_start, s.inventory_scaled)]
        window_end = at(rollout_start)
        first_traffic = analysis.time_to_first_traffic(
            timeline, "inventory", new_pods, at(scale_up_at), window_end
        )
        fair_share = analysis.time_to_fair_share(
            timeline, "inventory", new_pods, s.inventory_scaled, at(scale_up_at), window_end
        )
        rollout = analysis.phase_calls(timeline, at(rollout_start), at(rollout_end) + s.settle_s)
        scale_down = analysis.phase_calls(timeline, at(scale_down_at), at(started + duration + 1))
        return ModeResult(
            name=self.name,
            description=self.mode.description,
            steady=steady,
            scale_up=ScaleUp(
                start=s.inventory_start,
                end=s.inventory_scaled,
                first_traffic_s=analysis.rounded(first_traffic),
                fair_share_s=analysis.rounded(fair_share),
                window_s=round(window_end - at(scale_up_at), 2),
            ),
            rollout=rollout,
            scale_down=scale_down,
            failures_total=report.failures,
            status_counts=report.status_counts,
            timeline=timeline,
            # Rounded as the JSON holds them, so a result read back equals this one.
            events=tuple(Event(round(at(t), 3), kind, detail) for t, kind, detail in events),
            control_plane=self.mode.counters(),
            fixed_rate=fixed_rate,
            cpu_timeline=(
                self.sampler.timeline(timeline.start_unix, started, time.time())
                if s.limits is not None
                else None
            ),
            retries=self.retries.totals(),
            node_client=node_client,
        )


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds of the apps, the proxies and the lab process (one reading, or the
    difference of two)."""

    apps: float
    proxies: float
    lab: float

    @property
    def total(self) -> float:
        return self.apps + self.proxies + self.lab

    def __sub__(self, other: CpuSplit) -> CpuSplit:
        return CpuSplit(self.apps - other.apps, self.proxies - other.proxies, self.lab - other.lab)


def _pod_shares(
    counts: Mapping[str, Mapping[str, int]], replicas: Mapping[str, int]
) -> dict[str, dict[str, float]]:
    """Each pod's share of its hop's calls (``hop-0`` .. ``hop-<n-1>``, a pod with no
    call at 0), rounded as lab.json keeps them."""
    return {
        hop: {
            pod: round(share, 4)
            for pod, share in shares(
                counts.get(hop, {}), [f"{hop}-{i}" for i in range(count)]
            ).items()
        }
        for hop, count in replicas.items()
    }


def _per_1000(seconds: float, calls: int) -> float | None:
    return round(seconds / calls * 1000, 3) if calls else None


def _subtract(
    after: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Counts per pod over a run, from two readings of cumulative counters."""
    return {
        hop: {pod: n - before.get(hop, {}).get(pod, 0) for pod, n in pods.items()}
        for hop, pods in after.items()
    }


class Lab:
    """A whole lab run: the database server the modes share, the offered rate (fixed
    by the first mode unless given), and each mode in turn."""

    def __init__(
        self, settings: LabSettings, progress: Progress, announce: Progress | None = None
    ) -> None:
        self.settings = settings
        self.progress = progress
        # Where the offered rate is said once it is chosen (a result in itself, worth
        # keeping on screen); with the progress steps when not given.
        self.announce = announce or progress
        self.offered: OfferedRate | None = (
            None if settings.rate is None else capacity.given(settings.rate)
        )
        self.postgres: PostgresServer | None = None

    async def run(self, modes: list[str], machine: Machine | None = None) -> LabResults:
        try:
            measured = [await self.run_mode(name) for name in modes]
        finally:
            if self.postgres is not None:
                await asyncio.to_thread(self.postgres.stop)
        return LabResults(
            modes=measured, settings=self.settings.to_json(), machine=machine, offered=self.offered
        )

    async def database_url(self, mode: str) -> str:
        """A fresh database for ``mode``; "" (each service's SQLite file) for sqlite."""
        if self.settings.database != "postgres":
            return ""
        if self.postgres is None:
            self.progress("starting PostgreSQL")
            self.postgres = await asyncio.to_thread(start_postgres)
        name = "lab_" + mode.replace("-", "_")
        return await asyncio.to_thread(self.postgres.create_database, name)

    def offer(self, mode: str, steady: SteadyState) -> OfferedRate:
        if self.offered is None:
            s = self.settings
            limits = {service: limit.cpu_cores for service, limit in (s.limits or {}).items()}
            self.offered = capacity.derive(
                steady, s.steady_s, s.steady_replicas, limits, s.load_factor, mode
            )
            self.announce(capacity.describe(self.offered, s.objective_ms))
        return self.offered

    async def run_mode(self, name: str) -> ModeResult:
        """Everything the lab measures for one mode; every process stopped afterwards."""
        async with ModeRun(
            name, self.settings, self.progress, await self.database_url(name)
        ) as run:
            self.progress(f"{name}: starting ({run.mode.description})")
            await run.start()
            steady = await run.steady()
            fixed = await run.fixed_rate(self.offer(name, steady).rate)
            node = await run.node_client()
            return await run.events(steady, fixed, node)


async def run_mode(name: str, settings: LabSettings, progress: Progress) -> ModeResult:
    """One mode on its own (its own database server, the rate derived from itself)."""
    results = await Lab(settings, progress).run([name])
    return results.modes[0]
