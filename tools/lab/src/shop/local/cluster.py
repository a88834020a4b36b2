"""Starts, watches and stops the replica processes of a local shop.

Used by ``shop up``, ``shop demo``, the benchmarks and the end-to-end tests, so
they all exercise the same real processes. Every process is stopped when the
cluster is closed, including after an exception or Ctrl-C.

Each replica runs in its own session, as a container does: a terminal's Ctrl-C
reaches only the command that owns the cluster, which then stops the replicas with
one SIGTERM each, in order. On request (``restart=``) replicas that exit unasked
are restarted with back-off (see ``shop.local.supervisor``).

With ``ClusterSpec.limits`` each pod runs in a cgroup of its own with the chart's CPU
and memory limits, as the kubelet runs it (see ``shop.local.cgroups``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.credentials import LocalCredentials, ensure_credentials
from shop.local.addresses import AddressPlan, address_in_use
from shop.local.cgroups import PodCgroup, PodCgroups, PodLimits
from shop.local.lifecycle import StartStop
from shop.local.logs import log_tail
from shop.local.supervisor import Backoff, Supervisor, SupervisorEvent

SERVICES = ("inventory", "orders", "gateway")  # start order: dependencies first


class ClusterError(RuntimeError):
    pass


@dataclass
class Replica:
    service: str
    index: int
    grpc_addr: str
    metrics_addr: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    # time.monotonic() when the current process was started.
    started_at: float = 0.0
    # Restarts by a supervisor after unasked exits (kubectl's RESTARTS).
    restarts: int = 0
    # Set when the current process was signalled on purpose: its exit is no crash.
    stop_requested: bool = False

    @property
    def pod(self) -> str:
        return f"{self.service}-{self.index}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, command: list[str], env: Mapping[str, str]) -> None:
        """Starts the process, its output appended to the replica's log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Out of the terminal's process group: Ctrl-C must reach only the
                # owner, whose single SIGTERM then starts the drain. A replica that got
                # the SIGINT too would take that SIGTERM as a second signal and exit
                # at once (143) without draining.
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        self.stop_requested = False

    def wait_serving(self, deadline: float) -> None:
        """Returns once a gRPC health check says SERVING; raises with the log tail if the
        process died or ``deadline`` (a ``time.monotonic()`` value) passed."""
        while not health_serving(self.grpc_addr, timeout_s=1.0):
            if not self.alive():
                raise ClusterError(f"{self.pod} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.pod} not SERVING in time:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)


@dataclass
class ClusterSpec:
    replicas: Mapping[str, int] = field(
        default_factory=lambda: {"gateway": 1, "orders": 3, "inventory": 3}
    )
    plan: AddressPlan = field(default_factory=AddressPlan)
    data_dir: Path = Path("./data")
    database_url: str = ""
    # Local processes need little drain time: their clients watch health directly.
    drain_delay_s: float = 1.0
    shutdown_grace_s: float = 5.0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Per-service overrides, e.g. {"inventory": {"SHOP_MAX_CONNECTION_AGE_S": "2"}}.
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Per-replica overrides, last: (service, index) -> env, e.g. a target pointing at
    # the replica's own sidecar proxy.
    replica_env: Callable[[str, int], Mapping[str, str]] | None = None
    # Per-service CPU and memory limits, enforced with a cgroup per pod (e.g. the
    # chart's, shop.local.cgroups.CHART_LIMITS); a service not named runs unlimited.
    # None: no cgroups at all, and no need for root.
    limits: Mapping[str, PodLimits] | None = None


class LocalCluster(StartStop):
    def __init__(
        self,
        spec: ClusterSpec,
        *,
        restart: Backoff | None = None,
        on_restart: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        """``restart``: once ``start()`` has every replica SERVING, restart the ones
        that exit unasked with this back-off, reporting each exit and restart to
        ``on_restart`` (from the supervisor's thread). None: an exit stays an exit."""
        self.spec = spec
        self.replicas: list[Replica] = []
        self.log_dir = spec.data_dir / "logs"
        # Held while replicas are started, signalled or restarted, so that the
        # supervisor never acts on a replica half-way through a caller's change.
        self.lock = threading.RLock()
        self.supervisor = None if restart is None else Supervisor(self, restart, on_restart)
        # Made at the first replica start with limits, removed by stop().
        self.pod_cgroups: PodCgroups | None = None

    # --- addresses ---------------------------------------------------------------------

    def target(self, service: str) -> str:
        """The client target for ``service``: every replica address, round_robin."""
        return self.spec.plan.static_target(service, self.spec.replicas[service])

    @property
    def credentials(self) -> LocalCredentials:
        """The demo token issuer and internal keys, created on first use in the data
        dir and kept, so restarted replicas and later clients agree on them."""
        return ensure_credentials(self.spec.data_dir / "credentials")

    def end_user_metadata(self, customer: str, *, admin: bool = False) -> tuple[tuple[str, str]]:
        """Call metadata authenticating ``customer`` (or an administrator) to this shop."""
        token = self.credentials.issuer().token(customer, admin=admin)
        return (("authorization", f"Bearer {token}"),)

    @property
    def gateway_target(self) -> str:
        return self.target("gateway")

    def replicas_of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas if r.service == service]

    def metrics_targets(self) -> dict[str, list[str]]:
        """service -> every replica's /metrics address: a Prometheus job per service."""
        targets: dict[str, list[str]] = {}
        for replica in self.replicas:
            targets.setdefault(replica.service, []).append(replica.metrics_addr)
        return targets

    # --- lifecycle ---------------------------------------------------------------------

    def preflight(self) -> None:
        """Fails with one clear message if any replica address is already taken."""
        plan = self.spec.plan
        for service in SERVICES:
            for index in range(self.spec.replicas.get(service, 0)):
                for address in (plan.grpc_addr(service, index), plan.metrics_addr(service, index)):
                    problem = address_in_use(address)
                    if problem:
                        raise ClusterError(
                            f"{problem} (needed by {service}-{index}); stop whatever holds it "
                            "or choose another --base-port / --net"
                        )

    def start(self, timeout_s: float = 60.0) -> None:
        self.preflight()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            for index in range(self.spec.replicas.get(service, 0)):
                self.start_replica(service, index)
            # Orders seeds nothing, but creating schemas one service at a time keeps
            # the start-up log readable and the SQLite files uncontended.
            self.wait_ready(timeout_s, service=service)
        # Only now: a replica that cannot start at all is an error for the caller,
        # not a crash loop.
        if self.supervisor is not None:
            self.supervisor.start()

    def replica_env(self, service: str, index: int) -> dict[str, str]:
        plan = self.spec.plan
        env = dict(os.environ)
        env.update(
            {
                "SHOP_LISTEN_ADDR": plan.grpc_addr(service, index),
                "SHOP_METRICS_ADDR": plan.metrics_addr(service, index),
                "SHOP_POD_NAME": f"{service}-{index}",
                "SHOP_DATA_DIR": str(self.spec.data_dir.resolve()),
                "SHOP_DRAIN_DELAY_S": str(self.spec.drain_delay_s),
                "SHOP_SHUTDOWN_GRACE_S": str(self.spec.shutdown_grace_s),
                "SHOP_ORDERS_TARGET": self.target("orders"),
                "SHOP_INVENTORY_TARGET": self.target("inventory"),
                "OTEL_SERVICE_NAME": service,
                "GRPC_VERBOSITY": env.get("GRPC_VERBOSITY", "ERROR"),
            }
        )
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
        # The demo issuer's JWKS and the internal callers' keys (shop.credentials).
        env.update(self.credentials.service_env())
        if self.spec.database_url:
            env["DATABASE_URL"] = self.spec.database_url
        env.update(self.spec.extra_env)
        env.update(self.spec.service_env.get(service, {}))
        if self.spec.replica_env is not None:
            env.update(self.spec.replica_env(service, index))
        return env

    def start_replica(self, service: str, index: int) -> Replica:
        plan = self.spec.plan
        with self.lock:
            # Before the process: a pod that cannot get its limits must not run
            # without them (CgroupsUnavailable, at the first replica).
            cgroup = self._pod_cgroup(service, index)
            existing = next(
                (r for r in self.replicas if r.service == service and r.index == index), None
            )
            replica = existing or Replica(
                service,
                index,
                plan.grpc_addr(service, index),
                plan.metrics_addr(service, index),
                self.log_dir / f"{service}-{index}.log",
            )
            replica.spawn(
                [sys.executable, "-m", f"shop.{service}"], self.replica_env(service, index)
            )
            if existing is None:
                self.replicas.append(replica)
            if cgroup is not None:
                place_in(cgroup, replica)
            return replica

    def _pod_cgroup(self, service: str, index: int) -> PodCgroup | None:
        limits = self.spec.limits
        if limits is None or service not in limits:
            return None
        if self.pod_cgroups is None:
            self.pod_cgroups = PodCgroups.create("shop")
        # The same group for a restarted replica: its counters go on, as a pod's do.
        return self.pod_cgroups.pod(f"{service}-{index}", limits[service])

    def cgroup(self, pod: str) -> PodCgroup | None:
        """The pod's cgroup (CPU and memory counters), None without limits."""
        return None if self.pod_cgroups is None else self.pod_cgroups.get(pod)

    def wait_ready(
        self, timeout_s: float = 60.0, service: str | None = None, replica: Replica | None = None
    ) -> None:
        """Waits until each replica answers SERVING to a gRPC health check."""
        pending = (
            [replica]
            if replica is not None
            else [r for r in self.replicas if service is None or r.service == service]
        )
        deadline = time.monotonic() + timeout_s
        for r in pending:
            r.wait_serving(deadline)

    def signal_replica(self, replica: Replica, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signals a replica on purpose (a rollout, a scale-down, a test): whatever exit
        follows is not restarted."""
        with self.lock:
            replica.stop_requested = True
            if replica.alive():
                assert replica.process is not None
                replica.process.send_signal(sig)

    def wait_exit(self, replica: Replica, timeout_s: float) -> int | None:
        if replica.process is None:
            return None
        try:
            return replica.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float | None = None) -> dict[str, int | None]:
        """SIGTERM to everyone (front first), then SIGKILL whoever outlives the grace."""
        budget = timeout_s or (self.spec.drain_delay_s + self.spec.shutdown_grace_s + 10)
        try:
            if self.supervisor is not None:
                self.supervisor.close()  # first: a stopped replica must stay stopped
            with self.lock:
                front_first = [
                    r for service in reversed(SERVICES) for r in self.replicas_of(service)
                ]
            return stop_replicas(front_first, budget)
        finally:
            # Last, whatever happened above: the replicas are gone (or are killed
            # now, with anything they started), and the groups are removed.
            with self.lock:
                if self.pod_cgroups is not None:
                    self.pod_cgroups.close()
                    self.pod_cgroups = None


def place_in(cgroup: PodCgroup, replica: Replica) -> None:
    """Moves a just-spawned replica into its pod's cgroup.

    Right after the spawn: Python's start-up has barely begun, and writing the pid to
    cgroup.procs moves the whole process (every thread, and any child it starts
    later). The few pages it touched before stay charged to our own memory group; all
    it allocates from here on counts against the pod's limit. A replica the group
    cannot take is killed, and the OSError raised: it must not run without its limits
    (the supervisor counts that as a failed start, as it does a failed spawn)."""
    assert replica.process is not None
    try:
        cgroup.add(replica.process.pid)
    except ProcessLookupError:
        if replica.process.poll() is None:
            raise
        # Exited already: the supervisor or wait_serving reports it with its log.
    except OSError:
        replica.process.kill()
        replica.process.wait()
        raise


def stop_replicas(replicas: list[Replica], timeout_s: float) -> dict[str, int | None]:
    """One SIGTERM each, in order (a second would skip the drain), then SIGKILL for any
    still running after ``timeout_s``. Returns exit codes, None for a killed one."""
    running = [r for r in replicas if r.process is not None]
    for replica in running:
        replica.stop_requested = True
        if replica.alive():
            assert replica.process is not None
            replica.process.terminate()
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int | None] = {}
    for replica in running:
        assert replica.process is not None
        try:
            codes[replica.pod] = replica.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()
            codes[replica.pod] = None
    return codes


def health_serving(address: str, service: str = "", timeout_s: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


@contextlib.contextmanager
def running_cluster(spec: ClusterSpec, timeout_s: float = 60.0) -> Iterator[LocalCluster]:
    cluster = LocalCluster(spec)
    try:
        cluster.start(timeout_s)
        yield cluster
    finally:
        cluster.stop()
