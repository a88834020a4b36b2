"""Attempts each pod of a service answered, read from the pods' own metrics during a run.

The load generator sees calls; behind a retrying client one call may be several
attempts, and an attempt that failed at one pod and succeeded at another leaves no
trace at the caller. Each pod counts every attempt it answers, by status
(``grpc_server_handled_total``), and those that arrived as a retry
(``grpc_server_retried_total``); the sampler reads both from every pod's ``/metrics``
every interval, so the run can be told as "attempts per pod per second" and "when did
the failing pod stop getting attempts" afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from shop.runtime.orca import SERVER_TROUBLE

HANDLED = "grpc_server_handled"
RETRIED = "grpc_server_retried"
_TROUBLE = frozenset(code.name for code in SERVER_TROUBLE)


@dataclass(frozen=True)
class AttemptCounts:
    """One pod's cumulative counters for one gRPC service's methods."""

    answered: int = 0
    failed: int = 0  # answered with a status that says the server failed (orca.SERVER_TROUBLE)
    retried: int = 0  # arrived as a retry of an earlier attempt

    def __sub__(self, other: AttemptCounts) -> AttemptCounts:
        return AttemptCounts(
            self.answered - other.answered, self.failed - other.failed, self.retried - other.retried
        )


def parse_attempts(exposition: str, grpc_service: str) -> AttemptCounts:
    """The counters of ``grpc_service``'s methods in a /metrics text."""
    answered = failed = retried = 0.0
    for family in text_string_to_metric_families(exposition):
        if family.name not in (HANDLED, RETRIED):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # the _created companions
            if sample.labels.get("grpc_service") != grpc_service:
                continue
            if family.name == RETRIED:
                retried += sample.value
                continue
            answered += sample.value
            if sample.labels.get("grpc_code") in _TROUBLE:
                failed += sample.value
    return AttemptCounts(int(answered), int(failed), int(retried))


def read_metrics(metrics_addr: str, timeout_s: float) -> str:
    """A server's ``/metrics`` text (OSError if it cannot be read)."""
    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=timeout_s) as reply:
        text: str = reply.read().decode("utf-8", "replace")
    return text


def scrape_attempts(
    metrics_addr: str, grpc_service: str, timeout_s: float = 2.0
) -> AttemptCounts | None:
    """A pod's counters now; None if its /metrics cannot be read."""
    try:
        return parse_attempts(read_metrics(metrics_addr, timeout_s), grpc_service)
    except OSError:
        return None


@dataclass(frozen=True)
class AttemptSample:
    """Every pod's counters at one instant, ``unix`` seconds."""

    unix: float
    pods: Mapping[str, AttemptCounts]


class AttemptSampler:
    """Reads the counters of the pods ``targets()`` names ({pod: metrics address})
    every ``interval_s`` on the lab's event loop, until stopped."""

    def __init__(
        self,
        targets: Callable[[], Mapping[str, str]],
        grpc_service: str,
        interval_s: float,
    ) -> None:
        self._targets = targets
        self._service = grpc_service
        self.interval_s = interval_s
        self.samples: list[AttemptSample] = []
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> AttemptSample:
        found = {}
        for pod, address in self._targets().items():
            counts = await asyncio.to_thread(scrape_attempts, address, self._service)
            if counts is not None:
                found[pod] = counts
        reading = AttemptSample(time.time(), found)
        self.samples.append(reading)
        return reading

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.sample()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sample()  # the counters at the end


def totals(samples: Sequence[AttemptSample]) -> dict[str, AttemptCounts]:
    """Per pod, what it counted between the first and the last sample it is in."""
    first: dict[str, AttemptCounts] = {}
    last: dict[str, AttemptCounts] = {}
    for sample in samples:
        for pod, counts in sample.pods.items():
            first.setdefault(pod, counts)
            last[pod] = counts
    return {pod: last[pod] - first[pod] for pod in sorted(last)}


def last_attempt_s(samples: Sequence[AttemptSample], pod: str, start_unix: float) -> float | None:
    """Seconds after ``start_unix`` of the first sample by which ``pod`` had answered
    every attempt it would answer in the run: when it stopped getting any. None if it
    got none at all."""
    seen = [(s.unix, s.pods[pod].answered) for s in samples if pod in s.pods]
    if not seen or seen[-1][1] == seen[0][1]:
        return None
    final = seen[-1][1]
    reached = next(unix for unix, answered in seen if answered == final)
    return round(reached - start_unix, 2)
