"""One measurement: ``shop load`` run as a separate process, its JSON summary parsed.

The load generator runs in its own process so that its CPU never counts against
(or competes inside the event loop of) the server being measured, and so that the
benchmark measures exactly what ``shop load`` users see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# How long the loader may take beyond warm-up + duration (start-up, connect, report).
LOADER_OVERHEAD_BUDGET_S = 60.0


class LoadError(RuntimeError):
    """``shop load`` failed or printed something other than its JSON summary."""


@dataclass(frozen=True)
class LoadSpec:
    workload: str
    concurrency: int
    duration_s: float
    warmup_s: float
    # Open loop: calls/s on a fixed schedule (``concurrency`` unused), each call
    # judged by ``objective_ms``; None: closed loop at ``concurrency``.
    rate: float | None = None
    objective_ms: float | None = None


@dataclass(frozen=True)
class LoadResult:
    """The fields of ``shop load --json`` the benchmark uses."""

    calls: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    status_counts: dict[str, int]
    # Open loop: scheduled calls not sent (the loader's in-flight cap), and the share
    # of the calls asked for that ended OK within the objective (None: no objective).
    dropped: int = 0
    within_objective: float | None = None

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LoadResult:
        try:
            latency = document["latency_ms"]
            within = document.get("within_objective")
            return cls(
                calls=int(document["calls"]),
                calls_per_s=float(document["calls_per_s"]),
                p50_ms=float(latency["p50"]),
                p99_ms=float(latency["p99"]),
                errors=int(document["errors"]),
                status_counts={str(k): int(v) for k, v in document["status_counts"].items()},
                dropped=int(document.get("dropped", 0)),
                within_objective=None if within is None else float(within),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise LoadError(
                f"shop load --json lacks a field the benchmark needs: {error}"
            ) from None


def load_command(target: str, spec: LoadSpec, token_key: Path | None = None) -> list[str]:
    auth = [] if token_key is None else ["--token-key", str(token_key)]
    if spec.rate is None:
        shape = ["--concurrency", str(spec.concurrency)]
    else:
        shape = ["--rps", f"{spec.rate:g}"]
        if spec.objective_ms is not None:
            shape += ["--objective-ms", f"{spec.objective_ms:g}"]
    return [
        sys.executable,
        "-m",
        "shop.cli.main",
        "load",
        "--target",
        target,
        "--workload",
        spec.workload,
        *shape,
        "--duration",
        f"{spec.duration_s:g}",
        "--warmup",
        f"{spec.warmup_s:g}",
        "--json",
        "--no-progress",
        *auth,
    ]


def loader_env() -> dict[str, str]:
    env = dict(os.environ)
    # The client is not what is measured: it starts no traces of its own.
    env.update({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none"})
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    return env


def parse_summary(stdout: str) -> dict[str, Any]:
    """The JSON object ``shop load --json`` printed (tolerating lines before it)."""
    start = stdout.find("{")
    if start < 0:
        raise LoadError(f"shop load printed no JSON: {stdout[-500:]!r}")
    try:
        document, _ = json.JSONDecoder().raw_decode(stdout[start:])
    except json.JSONDecodeError as error:
        raise LoadError(f"shop load printed malformed JSON ({error}): {stdout[-500:]!r}") from None
    if not isinstance(document, dict):
        raise LoadError("shop load --json printed something other than an object")
    return document


def run_load(
    target: str,
    spec: LoadSpec,
    on_tick: Callable[[float], None] | None = None,
    token_key: Path | None = None,
) -> LoadResult:
    """Runs ``shop load`` against ``target``; ``on_tick(elapsed_s)`` is called while it runs."""
    budget_s = spec.warmup_s + spec.duration_s + LOADER_OVERHEAD_BUDGET_S
    started = time.monotonic()
    process = subprocess.Popen(
        load_command(target, spec, token_key),
        env=loader_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > budget_s:
                    raise LoadError(f"shop load did not finish within {budget_s:.0f}s") from None
                if on_tick is not None:
                    on_tick(elapsed)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    if process.returncode != 0:
        raise LoadError(
            f"shop load exited with {process.returncode} against {target}: "
            f"{stderr.strip()[-800:] or stdout.strip()[-800:]}"
        )
    return LoadResult.from_json(parse_summary(stdout))
