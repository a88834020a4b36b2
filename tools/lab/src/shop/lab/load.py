"""The lab's load: ``shop load --json --timeline`` in a process of its own, and the part
of its JSON report the lab reads (see ``shop.loadgen.stats`` for the whole of it).

A separate process keeps the load generator's CPU out of the modes' CPU figures and
its event loop away from the lab's servers (DNS, xDS).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shop.lab.results import Timeline, counts_from_json, floats_from_json, per_hop_from_json


@dataclass(frozen=True)
class LoadReport:
    """What one ``shop load`` run reported that the lab uses."""

    calls: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    per_hop: dict[str, dict[str, int]]  # hop -> pod -> calls served
    imbalance: dict[str, float]  # hop -> busiest share / mean, over the expected pods
    failures: int
    status_counts: dict[str, int]
    timeline: Timeline | None
    dropped: int = 0
    timeouts: int = 0
    within_objective: float | None = None
    goodput_per_s: float = 0.0

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LoadReport:
        timeline = raw.get("timeline")
        return cls(
            calls=int(raw["calls"]),
            calls_per_s=float(raw["calls_per_s"]),
            p50_ms=float(raw["latency_ms"]["p50"]),
            p99_ms=float(raw["latency_ms"]["p99"]),
            per_hop=per_hop_from_json(raw["per_hop"]),
            imbalance=floats_from_json(raw["imbalance"]),
            failures=int(raw["failures"]),
            status_counts=counts_from_json(raw["status_counts"]),
            timeline=None if timeline is None else Timeline.from_json(timeline),
            dropped=int(raw.get("dropped", 0)),
            timeouts=int(raw.get("timeouts", 0)),
            within_objective=(
                None if raw.get("within_objective") is None else float(raw["within_objective"])
            ),
            goodput_per_s=float(raw.get("goodput_per_s", 0.0)),
        )


@dataclass(frozen=True)
class LoadSpec:
    """How the lab loads the shop, the same in every mode."""

    target: str  # the gateway's address
    workload: str
    concurrency: int
    bucket_s: float  # timeline resolution
    token_key: Path  # the demo issuer's key the loader mints its customers' tokens with


@dataclass(frozen=True)
class FixedRateSpec:
    """The open loop: calls sent on a schedule whatever happens to earlier ones."""

    rate: float  # calls/s
    objective_ms: float
    deadline_s: float  # each call's deadline, as a real caller sets one
    # Calls in flight at most; past it a scheduled call is dropped (and misses the
    # objective). A pinned pod's queue grows by the overload every second.
    max_in_flight: int = 2000


class LoadProcess:
    """``shop load --json --timeline`` in its own process (its CPU is not counted).

    Closed loop (the spec's concurrency, a 10 s deadline) unless ``fixed_rate`` is
    given."""

    def __init__(
        self,
        spec: LoadSpec,
        duration_s: float,
        expect: Mapping[str, int],
        fixed_rate: FixedRateSpec | None = None,
    ) -> None:
        if fixed_rate is None:
            shape = ["--concurrency", str(spec.concurrency), "--timeout", "10"]
        else:
            shape = [
                "--rps", str(fixed_rate.rate), "--timeout", str(fixed_rate.deadline_s),
                "--objective-ms", str(fixed_rate.objective_ms),
                "--max-in-flight", str(fixed_rate.max_in_flight),
            ]  # fmt: skip
        self.command = [
            sys.executable, "-m", "shop.cli.main", "load", "--target", spec.target,
            "--workload", spec.workload, *shape,
            "--duration", str(duration_s), "--warmup", "0",
            "--json", "--no-progress", "--timeline", str(spec.bucket_s),
            *[f"--expect={service}={n}" for service, n in expect.items()],
            "--token-key", str(spec.token_key),
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        # subprocess.Popen, not the event loop's subprocess support: uvloop spawns with
        # fork(), which runs gRPC's fork handlers in the child while this process has
        # gRPC threads busy (the tracker's watches, the xDS server) and the child can
        # crash before exec; Popen uses vfork/posix_spawn, which runs no handlers.
        self._process = await asyncio.to_thread(
            subprocess.Popen, self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    async def result(self) -> LoadReport:
        assert self._process is not None
        process = self._process
        stdout, stderr = await asyncio.to_thread(process.communicate)
        if process.returncode != 0:
            raise RuntimeError(
                f"shop load exited {process.returncode}: "
                f"{(stderr or stdout).decode(errors='replace')[-800:]}"
            )
        return LoadReport.from_json(json.loads(stdout))

    async def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)
