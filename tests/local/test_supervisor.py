"""Restarts with back-off (the kubelet's CrashLoopBackOff) for a local cluster.

The schedule and the supervisor's decisions are checked without processes first;
then a real cluster shows a SIGKILLed replica coming back on its address while a
replica stopped on purpose (a rollout or a scale-down) stays stopped.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import ClusterSpec, LocalCluster, Replica, health_serving
from shop.local.supervisor import (
    Backoff,
    CrashLoop,
    ReplicaExited,
    ReplicaRestarted,
    Supervisor,
    SupervisorEvent,
    exit_reason,
)

from ..support.waiting import wait_until

# --- the schedule --------------------------------------------------------------------


def test_delay_doubles_up_to_the_cap() -> None:
    loop = CrashLoop(Backoff(initial_s=1.0, max_s=30.0, reset_after_s=60.0))
    delays = [loop.next_delay(ran_for_s=0.5) for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_long_enough_run_resets_the_delay() -> None:
    loop = CrashLoop(Backoff(initial_s=0.25, max_s=2.0, reset_after_s=10.0))
    assert [loop.next_delay(1.0) for _ in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    # Just short of the reset: still in the loop.
    assert loop.next_delay(9.99) == 2.0
    # Ran long enough: a fresh start, doubling again from there.
    assert loop.next_delay(10.0) == 0.25
    assert loop.next_delay(1.0) == 0.5


def test_many_restarts_stay_at_the_cap() -> None:
    assert Backoff(initial_s=1.0, max_s=300.0).delay(10_000) == 300.0


@pytest.mark.parametrize(
    ("initial_s", "max_s", "reset_after_s"), [(0.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 1.0, 0.0)]
)
def test_back_off_values_are_checked(initial_s: float, max_s: float, reset_after_s: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s, max_s, reset_after_s)


def test_exit_reasons() -> None:
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(1) == "exit code 1"


# --- the supervisor's decisions, on stand-in processes -------------------------------


class FakeProcess:
    """What the supervisor asks of a Popen: a pid and whether it has exited."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class FakeCluster:
    """The parts of LocalCluster a supervisor uses; start_replica makes a new process."""

    def __init__(self, pods: int) -> None:
        self.lock = threading.RLock()
        self.replicas = [
            Replica("inventory", i, f"addr-{i}", f"metrics-{i}", Path(os.devnull))
            for i in range(pods)
        ]
        self.pids = iter(range(1000, 2000))
        self.processes: dict[int, FakeProcess] = {}
        for replica in self.replicas:
            self.start_replica(replica.service, replica.index)

    def start_replica(self, service: str, index: int) -> Replica:
        replica = self.replicas[index]
        process = self.processes[index] = FakeProcess(next(self.pids))
        replica.process = process  # type: ignore[assignment]  # a stand-in for a Popen
        replica.started_at = time.monotonic()
        replica.stop_requested = False
        return replica

    def exit(self, index: int, returncode: int) -> None:
        self.processes[index].returncode = returncode


def supervisor_for(cluster: FakeCluster, backoff: Backoff) -> Supervisor:
    return Supervisor(cluster, backoff)  # type: ignore[arg-type]


def poll_until(supervisor: Supervisor, done: Callable[[list[SupervisorEvent]], bool]) -> None:
    wait_until(lambda: done(supervisor.poll()), "such an event", 10, poll_s=0.005)


def test_an_unasked_exit_is_restarted_after_the_delay() -> None:
    cluster = FakeCluster(pods=2)
    supervisor = supervisor_for(cluster, Backoff(initial_s=0.01, max_s=0.04))
    assert supervisor.poll() == []
    cluster.exit(0, -signal.SIGKILL)
    [exited] = supervisor.poll()
    assert exited == ReplicaExited("inventory-0", 1000, "killed by SIGKILL", 0, 0.01)
    poll_until(supervisor, lambda events: any(isinstance(e, ReplicaRestarted) for e in events))
    replica = cluster.replicas[0]
    assert replica.restarts == 1
    assert replica.process is not None and replica.process.pid == 1002
    # A quick second crash: the delay doubles.
    cluster.exit(0, 1)
    [exited] = supervisor.poll()
    assert exited == ReplicaExited("inventory-0", 1002, "exit code 1", 1, 0.02)


def test_an_intended_stop_is_not_restarted() -> None:
    cluster = FakeCluster(pods=1)
    supervisor = supervisor_for(cluster, Backoff(initial_s=0.001))
    replica = cluster.replicas[0]
    replica.stop_requested = True  # what signal_replica and stop() record
    cluster.exit(0, 0)
    for _ in range(3):
        assert supervisor.poll() == []
    # Started again by its owner (the second half of a rollout): supervised again.
    cluster.start_replica("inventory", 0)
    cluster.exit(0, -signal.SIGKILL)
    assert [type(e) for e in supervisor.poll()] == [ReplicaExited]


def test_a_pending_restart_is_dropped_when_the_owner_restarts_first() -> None:
    cluster = FakeCluster(pods=1)
    supervisor = supervisor_for(cluster, Backoff(initial_s=30.0, max_s=60.0))
    cluster.exit(0, -signal.SIGKILL)
    assert [type(e) for e in supervisor.poll()] == [ReplicaExited]
    cluster.start_replica("inventory", 0)
    assert supervisor.poll() == []
    assert cluster.replicas[0].restarts == 0


def test_nothing_is_restarted_after_close() -> None:
    cluster = FakeCluster(pods=1)
    supervisor = supervisor_for(cluster, Backoff(initial_s=0.001))
    cluster.exit(0, -signal.SIGKILL)
    assert [type(e) for e in supervisor.poll()] == [ReplicaExited]
    supervisor.close()
    assert supervisor.poll() == []
    assert cluster.replicas[0].restarts == 0


# --- a real cluster -------------------------------------------------------------------


def test_supervised_cluster_restarts_a_killed_replica_but_not_a_stopped_one(
    tmp_path: Path,
) -> None:
    events: list[SupervisorEvent] = []
    spec = ClusterSpec(
        replicas={"gateway": 0, "orders": 0, "inventory": 2},
        plan=AddressPlan(net=free_net()),
        data_dir=tmp_path,
        drain_delay_s=0.2,
        shutdown_grace_s=1.0,
    )
    cluster = LocalCluster(
        spec,
        restart=Backoff(initial_s=0.1, max_s=0.4, reset_after_s=60.0),
        on_restart=events.append,
    )
    try:
        cluster.start(timeout_s=90)
        crashed, stopped = cluster.replicas_of("inventory")
        pids = []
        for restarts in (1, 2):
            assert crashed.process is not None
            pids.append(crashed.process.pid)
            os.kill(crashed.process.pid, signal.SIGKILL)

            def restarted(count: int = restarts) -> bool:
                return crashed.restarts == count

            wait_until(restarted, f"restart {restarts}")
            cluster.wait_ready(60, replica=crashed)
            assert crashed.process is not None and crashed.process.pid not in pids
            assert health_serving(spec.plan.grpc_addr("inventory", 0))
        exits = [(e.pod, e.pid, e.reason, e.restarts, e.delay_s) for e in events if
                 isinstance(e, ReplicaExited)]  # fmt: skip
        assert exits == [
            ("inventory-0", pids[0], "killed by SIGKILL", 0, 0.1),
            ("inventory-0", pids[1], "killed by SIGKILL", 1, 0.2),  # doubled
        ]

        # A scale-down or the first half of a rollout: stopped on purpose, stays stopped.
        cluster.signal_replica(stopped)
        assert cluster.wait_exit(stopped, 30) == 0
        assert cluster.supervisor is not None
        assert cluster.supervisor.poll() == []
        assert not stopped.alive()
        assert all(e.replica is not stopped for e in events if isinstance(e, ReplicaRestarted))
        # The second half of the rollout: started again by its owner, not a restart.
        cluster.start_replica("inventory", 1)
        cluster.wait_ready(60, replica=stopped)
        assert stopped.restarts == 0
    finally:
        codes = cluster.stop()
    # Every replica, the restarted one too, drained and exited 0; none came back.
    assert codes == {"inventory-0": 0, "inventory-1": 0}
    assert not any(r.alive() for r in cluster.replicas)
