"""This process's cgroups, found from ``/proc``, and the CPU limit they put on it.

A Kubernetes CPU limit is a CFS quota on the container's cgroup (``cpu: 250m`` is
25 ms per 100 ms period). A server reporting its CPU utilization (``shop.runtime.orca``)
must report it against that limit, not against the node's cores: a pod using a
quarter of a core at a 250m limit is saturated, however idle the node is. The limit
is read from the kernel's files rather than from configuration, so it is right
whatever set it (the kubelet, an in-place resize, the lab's slow-pod scenario) and is
read again each time it is asked for.

The parsing of ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` lives here once;
the lab's pod cgroups (``shop.local.cgroups``) build on it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CgroupMount:
    point: Path
    root: str  # the hierarchy's path mounted there (not "/" in some containers)
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]


def parse_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup mounts in a ``/proc/<pid>/mountinfo`` text."""
    mounts = []
    for line in mountinfo.splitlines():
        # "id parent dev root point options [optional...] - fstype source superoptions"
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        mounts.append(CgroupMount(Path(point), fields[3], tail[0], frozenset(tail[2].split(","))))
    return mounts


def parse_own_paths(proc_cgroup: str) -> dict[str, str]:
    """controller -> the process's cgroup path, from a ``/proc/<pid>/cgroup`` text;
    the key "" is the cgroup2 hierarchy."""
    paths = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def under_mount(mount: CgroupMount, path: str) -> Path:
    """Where the cgroup ``path`` of ``mount``'s hierarchy is in the file system."""
    relative = os.path.relpath(path, mount.root)
    # A path outside the mounted part (a container's view): the mount is all we have.
    return mount.point if relative.startswith("..") else mount.point / relative


def own_cpu_files() -> Path | None:
    """The file holding this process's CPU quota: ``cpu.max`` (cgroup v2) or
    ``cpu.cfs_quota_us`` (v1, ``cpu.cfs_period_us`` beside it); None if there is none
    (not Linux, or no cpu controller mounted)."""
    try:
        mounts = parse_mounts(Path("/proc/self/mountinfo").read_text())
        own = parse_own_paths(Path("/proc/self/cgroup").read_text())
    except (OSError, ValueError):
        return None
    v1 = next((m for m in mounts if m.fstype == "cgroup" and "cpu" in m.options), None)
    if v1 is not None and "cpu" in own:
        quota = under_mount(v1, own["cpu"]) / "cpu.cfs_quota_us"
        return quota if quota.exists() else None
    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if v2 is not None and "" in own:
        limit = under_mount(v2, own[""]) / "cpu.max"
        return limit if limit.exists() else None
    return None


def quota_cores(quota_file: Path) -> float | None:
    """The CPU limit in cores that ``quota_file`` (see :func:`own_cpu_files`) sets;
    None when it sets none ("max", -1) or cannot be read."""
    try:
        if quota_file.name == "cpu.max":
            quota, period = quota_file.read_text().split()[:2]
        else:
            quota = quota_file.read_text().strip()
            period = (quota_file.parent / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class CpuLimit:
    """The CPU this process may use, in cores: its cgroup's quota if it has one, else
    the cores it may run on. Each call reads the quota again (one small file)."""

    def __init__(self, quota_file: Path | None = None, *, find: bool = True) -> None:
        self._file = quota_file if quota_file is not None or not find else own_cpu_files()
        self._cores = usable_cores()

    def cores(self) -> float:
        limit = None if self._file is None else quota_cores(self._file)
        # A quota above the cores available cannot be used either.
        return self._cores if limit is None else min(limit, self._cores)
