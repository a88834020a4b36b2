"""One benchmark run: start the servers, measure every configuration in rounds, report.

The plan interleaves configurations (round 1: A B C D E, round 2: A B C D E, ...)
so that slow drifts and bursts of noise on a shared machine spread over every
configuration instead of biasing whichever ran during them.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from shop.bench.configs import BenchConfig, System
from shop.bench.loadrun import LoadSpec, run_load
from shop.bench.otlp_sink import OtlpSink
from shop.bench.progress import PlanProgress
from shop.bench.results import BenchReport, ConfigResult, Sample, ratios
from shop.bench.served import handled_calls
from shop.bench.testbed import CHAIN_REPLICAS, Target, Testbed, span_services
from shop.local.cpu import total_cpu_s

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

    def load_spec(self, config: BenchConfig) -> LoadSpec:
        workload = self.chain_workload if config.system is System.CHAIN else "echo"
        return LoadSpec(workload, self.concurrency, self.duration_s, self.warmup_s)

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
    target: Target, config: BenchConfig, round_number: int, spec: LoadSpec, progress: PlanProgress
) -> Sample:
    expected_s = spec.warmup_s + spec.duration_s + LOADER_START_S
    handled_before = _handled(target)
    cpu_before = total_cpu_s(target.pids)
    load = run_load(
        target.address,
        spec,
        on_tick=lambda elapsed: progress.tick(elapsed / expected_s),
        token_key=target.token_key,
    )
    cpu_after = total_cpu_s(target.pids)
    handled_after = _handled(target)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    handled = None
    if handled_before is not None and handled_after is not None:
        handled = handled_after - handled_before
    if load.calls <= 0:
        raise BenchError(f"{config.key}: no call completed in round {round_number}")
    return Sample(config.key, round_number, load, cpu, spec.warmup_s + spec.duration_s, handled)


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


def run_bench(settings: BenchSettings, show_progress: bool = True) -> BenchReport:
    plan = measurement_plan(settings.configs, settings.rounds)
    samples: dict[str, list[Sample]] = {config.key: [] for config in settings.configs}
    with ExitStack() as stack:
        progress = stack.enter_context(PlanProgress(len(plan), show_progress))
        work_dir = stack.enter_context(_work_dir(settings.work_dir))
        traced = any(config.tracing for config in settings.configs)
        sink = stack.enter_context(OtlpSink()) if traced else None
        with Testbed(settings.configs, work_dir, sink.endpoint if sink else None) as bed:
            for index, (round_number, config) in enumerate(plan):
                progress.measuring(index, config.title, round_number, settings.rounds)
                sample = measure(
                    bed.target(config), config, round_number, settings.load_spec(config), progress
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
            results[config.key] = ConfigResult(config, tuple(samples[config.key]), spans)
    return BenchReport(settings.describe(), results, ratios(results))
