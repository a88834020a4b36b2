"""Pod cgroups: CPU and memory limits on local replicas, as the kubelet enforces a
pod's ``resources.limits``.

A CPU limit is no scheduling hint: the kubelet turns ``cpu: 250m`` into a CFS quota
of 25 ms per 100 ms period, and a pod that has used its quota is stopped until the
next period starts (throttled), however idle the node is. A pinned pod under load
therefore sees latency grow in steps of the period. A memory limit is a hard cap: a
pod that needs more is OOM-killed (and restarted by the kubelet). Balancing modes
behave differently under both, so the lab runs its replicas in cgroups with the
chart's numbers rather than as unbounded processes.

Layout: ``<own cgroup>/grpc-shop/<owner>-<pid>/<pod>`` in each hierarchy, under this
process's own cgroup (never the hierarchy's root: the process may be confined to a
nested one, and its replicas' memory should stay charged to it). cgroup v1 needs the
cpu, cpuacct and memory controllers; cgroup v2 needs cpu and memory available to
this process's cgroup.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from shop.runtime.cgroupfs import parse_mounts, parse_own_paths, under_mount

# The kubelet's default cpu.cfs_period_us (its --cpu-cfs-quota-period).
CFS_PERIOD_US = 100_000
# The kubelet's floor for a quota (and the kernel's: it rejects less than 1 ms).
MIN_CFS_QUOTA_US = 1_000
MIB = 1024 * 1024
# Shared by every owner on the machine; each owner's groups are in a folder of its own.
TOP = "grpc-shop"
# Kernel files hold names as they are; keep ours to what needs no quoting anywhere.
NAME = re.compile(r"^[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*$")

_MEMORY_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>[A-Za-z]*)$")


@dataclass(frozen=True)
class PodLimits:
    """A pod's ``resources.limits``: ``cpu_millis`` 250 is 0.25 core (``cpu: 250m``)."""

    cpu_millis: int
    memory_mib: int

    def __post_init__(self) -> None:
        if self.cpu_millis <= 0 or self.memory_mib <= 0:
            raise ValueError(f"limits must be positive, got {self}")

    @staticmethod
    def parse_cpu(quantity: str | int | float) -> int:
        """Millicores of a Kubernetes CPU quantity: "250m", "0.5" or "1" (a values file
        may hold a bare number)."""
        number, unit = _split_quantity(quantity, "CPU")
        if unit not in ("", "m"):
            raise ValueError(f"CPU quantity {quantity!r}: unit must be m or none")
        millis = number if unit == "m" else number * 1000
        # The API server rejects finer than 1m: no fraction of a millicore.
        if millis <= 0 or millis != millis.to_integral_value():
            raise ValueError(f"CPU quantity {quantity!r}: must be a positive whole number of m")
        return int(millis)

    @staticmethod
    def parse_memory(quantity: str | int) -> int:
        """MiB of a Kubernetes memory quantity: "256Mi", "1Gi" (or bytes, k/M/G/T,
        Ki/Ti) that is a whole number of MiB."""
        number, unit = _split_quantity(quantity, "memory")
        if unit not in _MEMORY_UNITS:
            raise ValueError(
                f"memory quantity {quantity!r}: unit must be one of "
                + ", ".join(u for u in _MEMORY_UNITS if u)
            )
        mib = number * _MEMORY_UNITS[unit] / MIB
        if mib <= 0 or mib != mib.to_integral_value():
            raise ValueError(f"memory quantity {quantity!r}: must be a positive whole MiB")
        return int(mib)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def cpu_cores(self) -> float:
        return self.cpu_millis / 1000.0

    def cfs_quota_us(self, period_us: int = CFS_PERIOD_US) -> int:
        """CPU time per period, as the kubelet computes it: millis * period / 1000."""
        return max(MIN_CFS_QUOTA_US, self.cpu_millis * period_us // 1000)

    def describe(self) -> str:
        """In the chart's spelling: "cpu 250m, memory 256Mi"."""
        return f"cpu {self.cpu_millis}m, memory {self.memory_mib}Mi"


def _split_quantity(quantity: str | int | float, what: str) -> tuple[Decimal, str]:
    match = _QUANTITY.match(str(quantity).strip())
    if match is None:
        raise ValueError(f"{what} quantity {quantity!r}: expected a number and a unit")
    try:
        return Decimal(match["number"]), match["unit"]
    except InvalidOperation:
        raise ValueError(f"{what} quantity {quantity!r}: not a number") from None


# The chart's resources.limits (helm/grpc-shop/values.yaml; a test checks they agree).
CHART_LIMITS: Mapping[str, PodLimits] = MappingProxyType(
    {
        "gateway": PodLimits(cpu_millis=500, memory_mib=256),
        "orders": PodLimits(cpu_millis=250, memory_mib=256),
        "inventory": PodLimits(cpu_millis=250, memory_mib=256),
    }
)


def chart_limits(cpu_millis: Mapping[str, int] | None = None) -> dict[str, PodLimits]:
    """The chart's limits, with the CPU of some services replaced (``--cpu-limit``)."""
    overrides = cpu_millis or {}
    return {
        service: PodLimits(overrides.get(service, chart.cpu_millis), chart.memory_mib)
        for service, chart in CHART_LIMITS.items()
    }


@dataclass(frozen=True)
class CpuStat:
    """Cumulative CPU counters of one pod cgroup (subtract two samples for a window)."""

    usage_s: float  # CPU seconds used by every process ever in the group
    periods: int  # enforcement periods in which the group ran
    throttled_periods: int  # periods that ended with the group stopped at its quota
    throttled_s: float  # time the group's runnable threads spent stopped


class CgroupsUnavailable(RuntimeError):
    """Pod cgroups cannot be made here; the message says what is missing."""


HOW_TO_FIX = "run as root (or in a cgroup delegated to this user), or run without pod limits"


# --- the kernel's files, per cgroup version ------------------------------------------


def _write(path: Path, value: str) -> None:
    # One write(2) per value, its error raised here: a buffered write would report a
    # rejected value (EINVAL, ESRCH) only at close, or never.
    path.write_text(value)


def _keyed(path: Path) -> dict[str, int]:
    """A "key value" per line file (cpu.stat)."""
    pairs = (line.split() for line in path.read_text().splitlines())
    return {fields[0]: int(fields[1]) for fields in pairs if len(fields) == 2}


class _Driver(ABC):
    """One cgroup version's files, below this process's own cgroup in each hierarchy."""

    def __init__(self, bases: Iterable[Path]) -> None:
        # Co-mounted v1 controllers (cpu,cpuacct) share one directory.
        self.bases = tuple(dict.fromkeys(bases))

    def dirs(self, relative: PurePosixPath) -> tuple[Path, ...]:
        return tuple(base / relative for base in self.bases)

    @abstractmethod
    def prepare(self) -> None:
        """Readies this process's own cgroup for groups below it."""

    def make(self, relative: PurePosixPath, *, parent: bool = False) -> None:
        """Creates a group; a ``parent`` holds groups, never processes."""
        for directory in self.dirs(relative):
            directory.mkdir(exist_ok=True)

    def add(self, relative: PurePosixPath, pid: int) -> None:
        # cgroup.procs moves every thread of the process; its later children are
        # born in the group.
        for directory in self.dirs(relative):
            _write(directory / "cgroup.procs", str(pid))

    def pids(self, relative: PurePosixPath) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs(relative):
            with contextlib.suppress(FileNotFoundError):
                found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return found

    @abstractmethod
    def set_limits(self, relative: PurePosixPath, limits: PodLimits) -> None: ...

    @abstractmethod
    def cpu_stat(self, relative: PurePosixPath) -> CpuStat: ...

    @abstractmethod
    def memory_bytes(self, relative: PurePosixPath) -> int: ...


class _V1(_Driver):
    """cgroup v1: cpu (CFS bandwidth), cpuacct (usage) and memory, each a hierarchy."""

    def __init__(self, cpu: Path, cpuacct: Path, memory: Path) -> None:
        super().__init__((cpu, cpuacct, memory))
        self.cpu, self.cpuacct, self.memory = cpu, cpuacct, memory

    def prepare(self) -> None:
        """Nothing to do: a v1 group has its hierarchy's controller from birth."""

    def set_limits(self, relative: PurePosixPath, limits: PodLimits) -> None:
        cpu = self.cpu / relative
        # The period first: the kernel checks a quota against the period in force.
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(limits.cfs_quota_us()))
        # Over this the kernel's OOM killer kills in the group: the pod's OOMKilled.
        # (Swap is not capped, as the kubelet expects nodes without swap.)
        _write(self.memory / relative / "memory.limit_in_bytes", str(limits.memory_bytes))

    def cpu_stat(self, relative: PurePosixPath) -> CpuStat:
        stat = _keyed(self.cpu / relative / "cpu.stat")
        usage_ns = int((self.cpuacct / relative / "cpuacct.usage").read_text())
        return CpuStat(
            usage_s=usage_ns / 1e9,
            periods=stat["nr_periods"],
            throttled_periods=stat["nr_throttled"],
            throttled_s=stat["throttled_time"] / 1e9,
        )

    def memory_bytes(self, relative: PurePosixPath) -> int:
        return int((self.memory / relative / "memory.usage_in_bytes").read_text())


class _V2(_Driver):
    """cgroup v2: one hierarchy; a group gets cpu and memory files only once its
    parent lists them in cgroup.subtree_control."""

    CONTROLLERS = ("cpu", "memory")

    def __init__(self, base: Path) -> None:
        super().__init__((base,))
        self.base = base

    def enable_controllers(self, directory: Path) -> None:
        control = directory / "cgroup.subtree_control"
        enabled = control.read_text().split() if control.exists() else []
        missing = [c for c in self.CONTROLLERS if c not in enabled]
        if missing:
            _write(control, " ".join(f"+{c}" for c in missing))

    def prepare(self) -> None:
        # Our own cgroup must pass cpu and memory on to grpc-shop. Only the root, or a
        # cgroup without processes of its own, may (v2's "no internal processes"
        # rule): a delegated cgroup (systemd's Delegate=yes) has them enabled already.
        try:
            self.enable_controllers(self.base)
        except OSError as error:
            raise CgroupsUnavailable(
                f"cgroup2 at {self.base}: cpu and memory are not enabled for child groups "
                f"in its cgroup.subtree_control, and enabling them failed "
                f"({error.strerror or error}); run in a cgroup delegated with those "
                f"controllers (e.g. systemd-run -p Delegate=yes), or run without pod limits"
            ) from error

    def make(self, relative: PurePosixPath, *, parent: bool = False) -> None:
        super().make(relative)
        if parent:
            # grpc-shop and the owner's folder hold no processes, so they may pass
            # the controllers on to the pod groups.
            self.enable_controllers(self.base / relative)

    def set_limits(self, relative: PurePosixPath, limits: PodLimits) -> None:
        group = self.base / relative
        _write(group / "cpu.max", f"{limits.cfs_quota_us()} {CFS_PERIOD_US}")
        # Over this the group's processes are OOM-killed: the pod's OOMKilled.
        _write(group / "memory.max", str(limits.memory_bytes))

    def cpu_stat(self, relative: PurePosixPath) -> CpuStat:
        stat = _keyed(self.base / relative / "cpu.stat")
        return CpuStat(
            usage_s=stat["usage_usec"] / 1e6,
            # Without a quota ever set the kernel leaves the nr_* lines out.
            periods=stat.get("nr_periods", 0),
            throttled_periods=stat.get("nr_throttled", 0),
            throttled_s=stat.get("throttled_usec", 0) / 1e6,
        )

    def memory_bytes(self, relative: PurePosixPath) -> int:
        return int((self.base / relative / "memory.current").read_text())


# --- finding this process's cgroups --------------------------------------------------


def _detect_system() -> _Driver:
    try:
        mounts = parse_mounts(Path("/proc/self/mountinfo").read_text())
        own = parse_own_paths(Path("/proc/self/cgroup").read_text())
    except OSError as error:
        raise CgroupsUnavailable(
            f"cannot find this process's cgroups (Linux only): {error}"
        ) from None
    # A controller is in one hierarchy only, v1 or v2: with all three on v1, use v1.
    v1: dict[str, Path] = {}
    for controller in ("cpu", "cpuacct", "memory"):
        mount = next((m for m in mounts if m.fstype == "cgroup" and controller in m.options), None)
        if mount is not None and controller in own:
            v1[controller] = under_mount(mount, own[controller])
    if len(v1) == 3:
        if not (v1["cpu"] / "cpu.cfs_quota_us").exists():
            raise CgroupsUnavailable(
                f"{v1['cpu']} has no cpu.cfs_quota_us: the kernel lacks CFS bandwidth "
                "control (CONFIG_CFS_BANDWIDTH), so CPU limits cannot be enforced"
            )
        return _V1(v1["cpu"], v1["cpuacct"], v1["memory"])
    unified = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if unified is None or "" not in own:
        missing = sorted({"cpu", "cpuacct", "memory"} - set(v1))
        raise CgroupsUnavailable(
            f"no cgroup v1 {', '.join(missing)} controller(s) mounted and no cgroup2 "
            f"mount: mount them under /sys/fs/cgroup, or run without pod limits"
        )
    return _v2_at(under_mount(unified, own[""]))


def _v2_at(own: Path) -> _V2:
    controllers_file = own / "cgroup.controllers"
    try:
        available = controllers_file.read_text().split()
    except OSError as error:
        raise CgroupsUnavailable(f"cannot read {controllers_file}: {error}") from None
    missing = [c for c in _V2.CONTROLLERS if c not in available]
    if missing:
        raise CgroupsUnavailable(
            f"cgroup2 at {own} lacks the {' and '.join(missing)} controller(s) in "
            f"cgroup.controllers (none are on a cgroup v1 mount either): enable them in "
            f"the parent's cgroup.subtree_control, or run without pod limits"
        )
    return _V2(own)


def _detect(root: Path | None) -> _Driver:
    if root is None:
        return _detect_system()
    # A tree standing for a cgroup mount, this process's cgroup at its top (tests):
    # cgroup2 if it has cgroup.controllers, else v1 with cpu/, cpuacct/, memory/.
    if (root / "cgroup.controllers").exists():
        return _v2_at(root)
    missing = [h for h in ("cpu", "cpuacct", "memory") if not (root / h).is_dir()]
    if missing:
        raise CgroupsUnavailable(f"{root}: no cgroup2 files and no v1 {', '.join(missing)}/")
    return _V1(root / "cpu", root / "cpuacct", root / "memory")


# --- pod groups ----------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's, alive
    return True


def _check_name(name: str, what: str) -> None:
    if not NAME.match(name):
        raise ValueError(f"{what} {name!r}: letters, digits, '_', '.' and inner '-' only")


class PodCgroup:
    """One pod's group: a replica restarted in it keeps the pod's counters, as a pod's
    cgroup outlives the restarts of its container."""

    def __init__(
        self, driver: _Driver, relative: PurePosixPath, pod: str, limits: PodLimits
    ) -> None:
        self._driver = driver
        self._relative = relative
        self.pod = pod
        self.limits = limits

    @property
    def paths(self) -> tuple[Path, ...]:
        """The group's directory in each hierarchy."""
        return self._driver.dirs(self._relative)

    def add(self, pid: int) -> None:
        """Moves process ``pid`` (every thread) into the group in every hierarchy."""
        self._driver.add(self._relative, pid)

    def pids(self) -> set[int]:
        return self._driver.pids(self._relative)

    def cpu_stat(self) -> CpuStat:
        return self._driver.cpu_stat(self._relative)

    def memory_bytes(self) -> int:
        """Memory charged to the group now (page cache included, as the kubelet sees)."""
        return self._driver.memory_bytes(self._relative)


# Owner folders in use by this process (two clusters of one process may share an owner).
_names_in_use: set[str] = set()
_names_lock = threading.Lock()


class PodCgroups:
    """Every pod group of one local cluster, under ``<own>/grpc-shop/<owner>-<pid>``."""

    # How long close() waits for killed processes to leave their groups.
    KILL_WAIT_S = 5.0

    def __init__(self, driver: _Driver, owner: str) -> None:
        _check_name(owner, "owner")
        self._driver = driver
        self._lock = threading.Lock()
        self._pods: dict[str, PodCgroup] = {}
        driver.prepare()
        self._remove_stale()
        with _names_lock:
            candidates = (
                f"{owner}{'' if n == 1 else f'.{n}'}-{os.getpid()}" for n in itertools.count(1)
            )
            self.name = next(c for c in candidates if c not in _names_in_use)
            _names_in_use.add(self.name)
        self.relative = PurePosixPath(TOP, self.name)
        try:
            self._make_folders()
        except OSError as error:
            self._release_name()
            raise CgroupsUnavailable(
                f"cannot create pod cgroups under {', '.join(map(str, driver.bases))}: "
                f"{error.strerror or error}; {HOW_TO_FIX}"
            ) from error

    @classmethod
    def create(cls, owner: str, *, root: Path | None = None) -> PodCgroups:
        """Pod groups for ``owner`` below this process's own cgroups (v1 when cpu,
        cpuacct and memory are v1 hierarchies, else cgroup2). ``root``: a directory
        tree standing in for the cgroup mount (tests). Raises CgroupsUnavailable."""
        return cls(_detect(root), owner)

    def _make_folders(self) -> None:
        for attempt in range(3):
            try:
                self._driver.make(PurePosixPath(TOP), parent=True)
                self._driver.make(self.relative, parent=True)
                return
            except FileNotFoundError:
                # Another owner's close() removed the empty grpc-shop in between.
                if attempt == 2:
                    raise

    def _remove_stale(self) -> None:
        """Removes the (empty) folders of owners whose process is gone: a run that
        crashed leaves its groups behind, and nothing else would remove them."""
        for top in self._driver.dirs(PurePosixPath(TOP)):
            if not top.is_dir():
                continue
            for folder in top.iterdir():
                pid = folder.name.rpartition("-")[2]
                if folder.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
                    # Groups with processes still in them refuse (EBUSY) and stay.
                    with contextlib.suppress(OSError):
                        for group in folder.iterdir():
                            if group.is_dir():
                                group.rmdir()
                        folder.rmdir()

    def pod(self, pod: str, limits: PodLimits) -> PodCgroup:
        """The pod's group, created with ``limits`` on first use; later calls return the
        same group (new limits are written to it, as an in-place pod resize would)."""
        _check_name(pod, "pod")
        with self._lock:
            existing = self._pods.get(pod)
            if existing is not None and existing.limits == limits:
                return existing
            relative = self.relative / pod
            self._driver.make(relative)
            self._driver.set_limits(relative, limits)
            group = PodCgroup(self._driver, relative, pod, limits)
            self._pods[pod] = group
            return group

    def get(self, pod: str) -> PodCgroup | None:
        with self._lock:
            return self._pods.get(pod)

    @property
    def paths(self) -> tuple[Path, ...]:
        """This owner's folder in each hierarchy."""
        return self._driver.dirs(self.relative)

    def close(self) -> None:
        """Kills whatever is still in a pod group, then removes every group and folder.
        Idempotent; also after a failed pod() or create half-way."""
        with self._lock:
            groups = sorted({g.name for d in self.paths if d.is_dir() for g in _subdirs(d)})
            failed = [name for name in groups if not self._remove_group(self.relative / name)]
            for relative in (self.relative, PurePosixPath(TOP)):
                for directory in self._driver.dirs(relative):
                    # grpc-shop stays while other owners use it (EBUSY, ENOTEMPTY).
                    with contextlib.suppress(OSError):
                        directory.rmdir()
            self._pods.clear()
            self._release_name()
        if failed:
            raise RuntimeError(f"pod cgroups still busy after SIGKILL: {', '.join(failed)}")

    def _remove_group(self, relative: PurePosixPath) -> bool:
        deadline = time.monotonic() + self.KILL_WAIT_S
        while True:
            for pid in self._driver.pids(relative) - {os.getpid()}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # A killed process leaves cgroup.procs when it exits, before it is reaped.
            with contextlib.suppress(OSError):
                for directory in self._driver.dirs(relative):
                    if directory.is_dir():
                        directory.rmdir()
            if not any(d.is_dir() for d in self._driver.dirs(relative)):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _release_name(self) -> None:
        with _names_lock:
            _names_in_use.discard(self.name)


def _subdirs(directory: Path) -> Iterator[Path]:
    return (entry for entry in directory.iterdir() if entry.is_dir())
