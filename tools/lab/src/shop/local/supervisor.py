"""Restarts the replicas of a local cluster that exit without being asked to.

The kubelet's ``restartPolicy: Always`` with CrashLoopBackOff, on loopback: a replica
that exits for any reason other than a stop the cluster asked for (``stop()``,
``signal_replica`` for a rollout or a scale-down) is started again on the same
address after a back-off that doubles with each restart up to a cap, and starts over
once a replica has run long enough before exiting.

Opt-in (``LocalCluster(spec, restart=Backoff(...))``): tests and the lab stop and
start replicas on purpose and must see exactly what they did.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shop.local.cluster import LocalCluster, Replica

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """The wait before a restart: ``initial_s``, doubled after every restart up to
    ``max_s``; back to ``initial_s`` when the replica had run ``reset_after_s`` before
    it exited.

    The kubelet uses 10 s, 5 min and 10 min. Locally the defaults are shorter: a crash
    here is mostly a developer's ``kill`` or a bug being chased, the replica should be
    back before they look at it, and one restart costs a Python start-up, so even a
    replica crashing at the 30 s cap leaves a laptop's cores to the rest of the shop.
    The reset comes at twice the cap, as the kubelet's 10 minutes are twice its 5.
    Unlike the kubelet, the first restart waits ``initial_s`` too: a replica that
    cannot start (a bad setting) then does not spin.
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(
                f"restart back-off must be > 0 and at most its cap "
                f"({self.initial_s} s, cap {self.max_s} s)"
            )
        if not self.reset_after_s > 0:
            raise ValueError(f"back-off reset must be > 0 s, got {self.reset_after_s}")

    def delay(self, streak: int) -> float:
        """The wait before the next restart after ``streak`` restarts in a row."""
        # Past 64 doublings any cap is reached; a larger power would overflow a float.
        return min(self.max_s, self.initial_s * 2.0 ** min(streak, 64))


@dataclass
class CrashLoop:
    """One replica's back-off state: how many restarts in a row without a long run."""

    backoff: Backoff
    streak: int = 0

    def next_delay(self, ran_for_s: float) -> float:
        """The wait before restarting a replica that exited after ``ran_for_s``."""
        if ran_for_s >= self.backoff.reset_after_s:
            self.streak = 0
        delay = self.backoff.delay(self.streak)
        self.streak += 1
        return delay


@dataclass(frozen=True)
class ReplicaExited:
    """A replica exited unasked; it is restarted after ``delay_s``."""

    pod: str
    pid: int | None
    reason: str
    restarts: int  # so far, as kubectl's RESTARTS column
    delay_s: float


@dataclass(frozen=True)
class ReplicaRestarted:
    """A new process for ``replica`` was started (it is not SERVING yet)."""

    replica: Replica
    pid: int
    restarts: int


SupervisorEvent = ReplicaExited | ReplicaRestarted


def exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Supervisor:
    """Watches a cluster's replicas from a thread and restarts the ones that exit
    unasked. ``poll()`` is one round of that and can be driven directly."""

    def __init__(
        self,
        cluster: LocalCluster,
        backoff: Backoff,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        *,
        interval_s: float = 0.1,
    ) -> None:
        self.cluster = cluster
        self.backoff = backoff
        self.on_event = on_event
        self.interval_s = interval_s
        self._loops: dict[str, CrashLoop] = {}
        self._due: dict[str, float] = {}  # pod -> when its restart is due (clock)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and not self._closed.is_set():
            # A daemon: a caller that forgets close() must not hang at interpreter exit.
            self._thread = threading.Thread(target=self._run, name="replica-supervisor")
            self._thread.daemon = True
            self._thread.start()

    def close(self) -> None:
        """No restart happens once this returns."""
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._closed.wait(self.interval_s):
            try:
                for event in self.poll():
                    if self.on_event is not None:
                        self.on_event(event)
            except Exception:
                # A supervisor that died silently would leave crashed replicas down.
                log.exception("replica supervisor: poll failed; trying again")

    def poll(self) -> list[SupervisorEvent]:
        """Notices exits and performs the restarts that are due; returns what happened."""
        events: list[SupervisorEvent] = []
        # The cluster's lock: a stop or a restart by the caller is never interleaved
        # with ours, and nothing is started once close() was called.
        with self.cluster.lock:
            if self._closed.is_set():
                return events
            now = time.monotonic()  # the clock of Replica.started_at
            for replica in list(self.cluster.replicas):
                event = self._check(replica, now)
                if event is not None:
                    events.append(event)
        return events

    def _check(self, replica: Replica, now: float) -> SupervisorEvent | None:
        pod = replica.pod
        process = replica.process
        if process is None or replica.stop_requested or process.poll() is None:
            # Never started, stopped on purpose, or running (perhaps started again by
            # the caller while its restart was pending): nothing to do.
            self._due.pop(pod, None)
            return None
        due = self._due.get(pod)
        if due is None:
            delay = self._schedule(pod, now - replica.started_at, now)
            return ReplicaExited(
                pod, process.pid, exit_reason(process.returncode), replica.restarts, delay
            )
        if now < due:
            return None
        del self._due[pod]
        try:
            self.cluster.start_replica(replica.service, replica.index)
        except OSError as error:
            # Not a run at all: the streak goes on.
            delay = self._schedule(pod, 0.0, now)
            return ReplicaExited(pod, None, f"could not start: {error}", replica.restarts, delay)
        replica.restarts += 1
        assert replica.process is not None
        return ReplicaRestarted(replica, replica.process.pid, replica.restarts)

    def _schedule(self, pod: str, ran_for_s: float, now: float) -> float:
        loop = self._loops.setdefault(pod, CrashLoop(self.backoff))
        delay = loop.next_delay(ran_for_s)
        self._due[pod] = now + delay
        return delay
