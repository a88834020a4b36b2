"""Retries the servers saw, summed over a run in which pods come and go.

A retry that succeeds hides a failure from the caller, so a mode whose clients (or
proxies) retry can show zero failed calls while its pods fail attempts. The runtime
counts every attempt that arrives as a retry (``grpc_server_retried_total``: gRPC
sets ``grpc-previous-rpc-attempts`` on retried attempts). A pod's counter lives as
long as its process, so the lab reads it before it stops a pod and at the end of the
run, and adds up what each process counted after the run began.
"""

from __future__ import annotations

from collections import Counter

from shop.lab.attempts import read_metrics
from shop.lab.results import service_of

RETRIED_METRIC = "grpc_server_retried_total"


def parse_retried(exposition: str) -> int:
    """The sum of ``grpc_server_retried_total`` over its labels in a /metrics text."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(RETRIED_METRIC + "{") or line.startswith(RETRIED_METRIC + " "):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def scrape_retried(metrics_addr: str, timeout_s: float = 2.0) -> int | None:
    """A replica's count so far; None if it cannot be read (a process already gone)."""
    try:
        return parse_retried(read_metrics(metrics_addr, timeout_s))
    except OSError:
        return None


class RetryTally:
    """Retried attempts per service since ``begin``, across pod restarts."""

    def __init__(self) -> None:
        self._baseline: dict[str, int] = {}  # pod -> its process's count at begin
        self.per_service: Counter[str] = Counter()

    def begin(self, counts: dict[str, int | None]) -> None:
        """The counts of the pods running when the run begins."""
        self._baseline = {pod: n for pod, n in counts.items() if n is not None}

    def process_ends(self, pod: str, count: int | None) -> None:
        """A pod's process is about to stop (or the run ends) and counted ``count``;
        a process started later begins at zero."""
        if count is not None:
            self.per_service[service_of(pod)] += count - self._baseline.get(pod, 0)
        self._baseline.pop(pod, None)

    def totals(self) -> dict[str, int]:
        return dict(sorted(self.per_service.items()))
