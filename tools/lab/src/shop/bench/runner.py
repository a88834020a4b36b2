"""One benchmark run: start the servers, measure every configuration in rounds, report.

The plan interleaves configurations (round 1: A B C D E, round 2: A B C D E, ...)
so that slow drifts and bursts of noise on a shared machine spread over every
configuration instead of biasing whichever ran during them.

With a profile directory, py-spy samples every chain process during each of its
measurements (:mod:`shop.bench.profile`), and the report splits each chain
configuration's CPU per call by category (:mod:`shop.bench.breakdown`). The chain's
figures are then taken under the sampler: compare them with profiled runs.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from shop.bench.breakdown import CpuBreakdown, ProcessProfile, cpu_breakdown
from shop.bench.configs import (
    DEFAULT_CHAIN_OBJECTIVE_MS,
    DEFAULT_CHAIN_RATE,
    BenchConfig,
    System,
)
from shop.bench.loadrun import LoadSpec, run_load
from shop.bench.otlp_sink import OtlpSink
from shop.bench.profile import SAMPLE_RATE_HZ, Profiler, check_attach
from shop.bench.progress import PlanProgress
from shop.bench.results import BenchReport, ConfigResult, Sample, ratios
from shop.bench.served import handled_calls
from shop.bench.stacks import count_by_thread, python_thread_names
from shop.bench.testbed import CHAIN_REPLICAS, Target, Testbed, span_services
from shop.local.cpu import process_cpu_s, tree_cpu_s

# What `shop load` is expected to need beyond warm-up + duration (start-up, connect).
LOADER_START_S = 1.0


class BenchError(RuntimeError):
    """A measurement could not be trusted (a server died, the loader failed)."""


@dataclass(frozen=True)
class BenchSettings:
    configs: tuple[BenchConfig, ...]
    rounds: int
    concurrency: int
    duration_s: float
    warmup_s: float
    chain_workload: str
    # Replica logs and SQLite files; a temporary directory (removed after) when None.
    work_dir: Path | None = None
    # chain-fixed: calls/s offered (open loop) and the objective each call is judged by.
    chain_rate: float = DEFAULT_CHAIN_RATE
    chain_objective_ms: float = DEFAULT_CHAIN_OBJECTIVE_MS
    # --profile: where py-spy's stacks and the flame graphs go, and the py-spy to run.
    profile_dir: Path | None = None
    py_spy: str | None = None

    def load_spec(self, config: BenchConfig) -> LoadSpec:
        workload = self.chain_workload if config.system is System.CHAIN else "echo"
        spec = LoadSpec(workload, self.concurrency, self.duration_s, self.warmup_s)
        if config.fixed_rate:
            spec = replace(spec, rate=self.chain_rate, objective_ms=self.chain_objective_ms)
        return spec

    @property
    def per_call(self) -> str:
        """What one chain call is: every call a PlaceOrder, or a mix of methods."""
        return "PlaceOrder" if self.chain_workload == "place" else "call"

    def describe(self) -> dict[str, Any]:
        """Everything a reader needs to reproduce or compare the figures."""
        return {
            "configs": [config.key for config in self.configs],
            "rounds": self.rounds,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "chain_workload": self.chain_workload,
            "chain_replicas": dict(CHAIN_REPLICAS),
            "chain_rate": self.chain_rate,
            "chain_objective_ms": self.chain_objective_ms,
            "profile_dir": None if self.profile_dir is None else str(self.profile_dir),
            "profile_sample_rate_hz": None if self.profile_dir is None else SAMPLE_RATE_HZ,
            "otel_traces_sampler": os.environ.get(
                "OTEL_TRACES_SAMPLER", "parentbased_always_on (default)"
            ),
            "uvloop": os.environ.get("SHOP_UVLOOP", "true (default)"),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        }


def measurement_plan(
    configs: tuple[BenchConfig, ...], rounds: int
) -> list[tuple[int, BenchConfig]]:
    """(round, config) pairs in the order they run: every config once per round."""
    return [(round_number, config) for round_number in range(1, rounds + 1) for config in configs]


def measure(
    target: Target,
    config: BenchConfig,
    round_number: int,
    spec: LoadSpec,
    progress: PlanProgress,
    profiler: Profiler | None = None,
) -> Sample:
    expected_s = spec.warmup_s + spec.duration_s + LOADER_START_S
    sampled = (
        nullcontext()
        if profiler is None
        else profiler.recording(config.key, round_number, target.processes)
    )
    with sampled:
        handled_before = _handled(target)
        cpu_before = _cpu_by_process(target)
        load = run_load(
            target.address,
            spec,
            on_tick=lambda elapsed: progress.tick(elapsed / expected_s),
            token_key=target.token_key,
        )
        cpu_after = _cpu_by_process(target)
        handled_after = _handled(target)
    cpu_by_process = None
    if cpu_before is not None and cpu_after is not None:
        cpu_by_process = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    cpu = None if cpu_by_process is None else sum(cpu_by_process.values())
    handled = None
    if handled_before is not None and handled_after is not None:
        handled = handled_after - handled_before
    if load.calls <= 0:
        raise BenchError(f"{config.key}: no call completed in round {round_number}")
    return Sample(
        config.key,
        round_number,
        load,
        cpu,
        spec.warmup_s + spec.duration_s,
        handled,
        cpu_by_process,
    )


def _cpu_by_process(target: Target) -> dict[str, float] | None:
    """CPU seconds so far of each of the target's processes; None if one cannot tell."""
    seconds = {name: process_cpu_s(pid) for name, pid in target.processes.items()}
    if target.database_pid is not None:
        seconds["postgres"] = tree_cpu_s(target.database_pid)
    known = {name: value for name, value in seconds.items() if value is not None}
    return known if len(known) == len(seconds) else None


def _handled(target: Target) -> int | None:
    """The front server's handled-call counter; None for a server without metrics."""
    if target.metrics_addr is None:
        return None
    try:
        return handled_calls(target.metrics_addr, target.grpc_service)
    except OSError as error:
        raise BenchError(f"cannot read {target.metrics_addr}/metrics: {error}") from None


@contextmanager
def _work_dir(chosen: Path | None) -> Iterator[Path]:
    if chosen is not None:
        chosen.mkdir(parents=True, exist_ok=True)
        yield chosen
        return
    with tempfile.TemporaryDirectory(prefix="shop-bench-") as temporary:
        yield Path(temporary)


def profiled(config: BenchConfig) -> bool:
    """Whether --profile samples this configuration's processes (the SQLite chain's:
    py-spy reads Python processes, and PostgreSQL's server is not one)."""
    return config.system is System.CHAIN and config.database == "sqlite"


def run_bench(settings: BenchSettings, show_progress: bool = True) -> BenchReport:
    plan = measurement_plan(settings.configs, settings.rounds)
    samples: dict[str, list[Sample]] = {config.key: [] for config in settings.configs}
    profiler = None
    if settings.profile_dir is not None:
        if settings.py_spy is None:
            raise BenchError("--profile needs py-spy, and none was given")
        settings.profile_dir.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(settings.profile_dir, settings.py_spy)
    with ExitStack() as stack:
        progress = stack.enter_context(PlanProgress(len(plan), show_progress))
        work_dir = stack.enter_context(_work_dir(settings.work_dir))
        traced = any(config.tracing for config in settings.configs)
        sink = stack.enter_context(OtlpSink()) if traced else None
        with Testbed(settings.configs, work_dir, sink.endpoint if sink else None) as bed:
            if profiler is not None:
                progress.phase("checking that py-spy can read the chain's processes")
                for config in filter(profiled, settings.configs):
                    check_attach(profiler.py_spy, bed.target(config).processes)
            for index, (round_number, config) in enumerate(plan):
                progress.measuring(index, config.title, round_number, settings.rounds)
                sample = measure(
                    bed.target(config),
                    config,
                    round_number,
                    settings.load_spec(config),
                    progress,
                    profiler if profiled(config) else None,
                )
                dead = bed.dead_servers()
                if dead:
                    raise BenchError(f"server(s) exited during {config.key}: {', '.join(dead)}")
                samples[config.key].append(sample)
            progress.finished()
            # Leaving the block stops the servers, which flush their last spans.
            progress.phase("stopping servers (flushing spans)")
        results = {}
        for config in settings.configs:
            spans = None
            if sink is not None and config.tracing:
                counts = sink.spans.counts()
                spans = {name: counts.get(name, 0) for name in span_services(config)}
            result = ConfigResult(config, tuple(samples[config.key]), spans)
            if config.fixed_rate:
                result = replace(
                    result,
                    offered_calls_per_s=settings.chain_rate,
                    objective_ms=settings.chain_objective_ms,
                )
            results[config.key] = result
    if profiler is not None:
        flame_graphs = profiler.write_flame_graphs()
        for key, result in results.items():
            if profiled(result.config):
                results[key] = replace(
                    result, breakdown=_breakdown(result, profiler, flame_graphs, settings)
                )
    report = BenchReport(settings.describe(), results, ratios(results))
    if settings.profile_dir is not None:
        # Beside the stacks and graphs, the figures they belong to (for before/after).
        (settings.profile_dir / "bench.json").write_text(
            json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8"
        )
    return report


def _breakdown(
    result: ConfigResult,
    profiler: Profiler,
    flame_graphs: dict[tuple[str, str], Path],
    settings: BenchSettings,
) -> CpuBreakdown | None:
    """The configuration's CPU per call by category; None if its CPU was not measured."""
    key = result.config.key
    cpu_us = result.median("server_cpu_us_per_call")
    cpu_s = result.cpu_s_by_process()
    if cpu_us is None or cpu_s is None:
        return None
    processes = {}
    for name, seconds in cpu_s.items():
        stacks = profiler.stacks.get((key, name), Counter())
        processes[name] = ProcessProfile(
            cpu_s=seconds,
            counts_by_thread=count_by_thread(stacks),
            threads=profiler.threads(key, name),
            python_names=python_thread_names(stacks),
            py_spy_errors=profiler.errors[(key, name)],
            flame_graph=flame_graphs.get((key, name)),
        )
    return cpu_breakdown(key, settings.per_call, cpu_us, processes, SAMPLE_RATE_HZ)
