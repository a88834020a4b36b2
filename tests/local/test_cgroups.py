"""Pod cgroups: the kubelet's CPU quota and memory limit on local processes.

Quantities and the cgroup v2 and v1 files are checked on fake trees first (any
machine); then real groups throttle a busy process to its quota, leave an idle one
alone, and are removed with whatever is still in them. The real ones need root
and cgroups: skipped without (failed in CI, see tests/support/cgroups.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shop.local.cgroups import (
    CFS_PERIOD_US,
    CHART_LIMITS,
    CgroupsUnavailable,
    CpuStat,
    PodCgroup,
    PodCgroups,
    PodLimits,
    chart_limits,
)

from ..support.cgroups import pod_cgroups
from ..support.waiting import wait_until

MIB = 1024 * 1024

# --- quantities ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "millis"),
    [("250m", 250), ("0.5", 500), ("1", 1000), ("1.5", 1500), ("2000m", 2000), (1, 1000)],
)
def test_cpu_quantities(quantity: str | int, millis: int) -> None:
    assert PodLimits.parse_cpu(quantity) == millis


@pytest.mark.parametrize(
    ("quantity", "mib"),
    [("256Mi", 256), ("1Gi", 1024), ("262144Ki", 256), (str(64 * MIB), 64), ("0.5Gi", 512)],
)
def test_memory_quantities(quantity: str, mib: int) -> None:
    assert PodLimits.parse_memory(quantity) == mib


@pytest.mark.parametrize("quantity", ["", "m", "250x", "-1", "0", "0m", "0.0005", "1.5m", "two"])
def test_bad_cpu_quantity_is_named(quantity: str) -> None:
    with pytest.raises(ValueError, match=repr(quantity).replace(".", r"\.")):
        PodLimits.parse_cpu(quantity)


@pytest.mark.parametrize("quantity", ["", "256", "256MB", "100M", "0Mi", "-1Gi", "lots"])
def test_bad_memory_quantity_is_named(quantity: str) -> None:
    # "256" is 256 bytes and "100M" 100e6 bytes: no whole MiB.
    with pytest.raises(ValueError, match=repr(quantity)):
        PodLimits.parse_memory(quantity)


def test_quota_is_millis_of_the_period() -> None:
    assert CFS_PERIOD_US == 100_000
    assert PodLimits(250, 256).cfs_quota_us() == 25_000
    assert PodLimits(1500, 256).cfs_quota_us() == 150_000
    assert PodLimits(250, 256).cfs_quota_us(period_us=50_000) == 12_500
    # The kubelet's (and kernel's) floor: 1 ms per period.
    assert PodLimits(1, 256).cfs_quota_us() == 1_000


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PodLimits(0, 256)
    with pytest.raises(ValueError):
        PodLimits(100, 0)


def test_chart_limits_cover_every_service() -> None:
    assert set(CHART_LIMITS) == {"gateway", "orders", "inventory"}
    assert CHART_LIMITS["gateway"] == PodLimits(500, 256)


# --- fake trees: the files each version reads and writes -----------------------------


def _empty_groups(top: Path) -> None:
    """Deletes the files written into a fake tree's groups: the kernel's vanish with
    their directory, a fake's would keep rmdir from removing it."""
    for path in sorted(top.rglob("*"), reverse=True):
        if path.is_file():
            path.unlink()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose pid a fake group can hold."""
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_v2_files_on_a_fake_tree(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    groups = PodCgroups.create("fake", root=tmp_path)
    owner = tmp_path / "grpc-shop" / f"fake-{os.getpid()}"
    assert groups.paths == (owner,)
    # Controllers passed on down to the pod groups: ours, grpc-shop, the owner's.
    for parent in (tmp_path, tmp_path / "grpc-shop", owner):
        assert (parent / "cgroup.subtree_control").read_text() == "+cpu +memory"

    group = groups.pod("orders-0", PodLimits(250, 128))
    assert group.paths == (owner / "orders-0",)
    assert (owner / "orders-0" / "cpu.max").read_text() == "25000 100000"
    assert (owner / "orders-0" / "memory.max").read_text() == str(128 * MIB)

    group.add(sleeper.pid)
    assert (owner / "orders-0" / "cgroup.procs").read_text() == str(sleeper.pid)
    (owner / "orders-0" / "cpu.stat").write_text(
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
        "nr_periods 40\nnr_throttled 12\nthrottled_usec 750000\n"
    )
    (owner / "orders-0" / "memory.current").write_text("73400320\n")
    assert group.cpu_stat() == CpuStat(
        usage_s=2.5, periods=40, throttled_periods=12, throttled_s=0.75
    )
    assert group.memory_bytes() == 73_400_320

    # (Killing what is left is for a real tree: a fake's cgroup.procs never empties.)
    _empty_groups(tmp_path / "grpc-shop")
    groups.close()
    assert not (tmp_path / "grpc-shop").exists()
    groups.close()  # idempotent


def test_v2_without_cpu_controller_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(CgroupsUnavailable, match="cpu controller"):
        PodCgroups.create("fake", root=tmp_path)


def _fake_v1(root: Path) -> Path:
    for hierarchy in ("cpu", "cpuacct", "memory"):
        (root / hierarchy).mkdir()
    return root


def test_v1_files_on_a_fake_tree(tmp_path: Path) -> None:
    groups = PodCgroups.create("fake", root=_fake_v1(tmp_path))
    group = groups.pod("gateway-0", PodLimits(500, 256))
    pod = Path("grpc-shop", f"fake-{os.getpid()}", "gateway-0")
    cpu, cpuacct, memory = (tmp_path / h / pod for h in ("cpu", "cpuacct", "memory"))
    assert group.paths == (cpu, cpuacct, memory)
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (memory / "memory.limit_in_bytes").read_text() == str(256 * MIB)
    (cpu / "cpu.stat").write_text("nr_periods 7\nnr_throttled 3\nthrottled_time 120000000\n")
    (cpuacct / "cpuacct.usage").write_text("1500000000\n")
    (memory / "memory.usage_in_bytes").write_text("1048576\n")
    assert group.cpu_stat() == CpuStat(1.5, 7, 3, 0.12)
    assert group.memory_bytes() == MIB
    _empty_groups(tmp_path)
    groups.close()
    assert not any((tmp_path / h / "grpc-shop").exists() for h in ("cpu", "cpuacct", "memory"))


def test_a_tree_without_hierarchies_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    with pytest.raises(CgroupsUnavailable, match="cpuacct, memory"):
        PodCgroups.create("fake", root=tmp_path)


def test_names_are_checked(tmp_path: Path) -> None:
    _fake_v1(tmp_path)
    with pytest.raises(ValueError, match="owner"):
        PodCgroups.create("../escape", root=tmp_path)
    groups = PodCgroups.create("fake", root=tmp_path)
    try:
        with pytest.raises(ValueError, match="pod"):
            groups.pod("a/b", PodLimits(100, 64))
    finally:
        groups.close()


# --- real groups ---------------------------------------------------------------------


@pytest.fixture
def groups() -> Iterator[PodCgroups]:
    with pod_cgroups() as made:
        yield made


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes appended here are killed at teardown, however the test ends."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def _python(code: str, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code])
    processes.append(process)
    return process


# Spins for at most 20 s: ends by itself even if the test's kill never comes.
BUSY = "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass"
# Wakes every 20 ms for a sliver of work: runs in many periods, never near a quota.
IDLE = "import time\nfor _ in range(1000):\n    sum(range(1000))\n    time.sleep(0.02)"


def _in_group(pid: int, group: PodCgroup) -> bool:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    # The path in cpu, cpuacct and memory (v1) or the one of cgroup2 ends in the
    # group's own part: grpc-shop/<owner>/<pod>.
    tail = "/" + "/".join(group.paths[0].parts[-3:])
    v1 = (group.paths[0] / "tasks").exists()  # a v1-only file
    wanted = {"cpu", "cpuacct", "memory"} if v1 else {""}
    paths = [path for line in lines for _, names, path in [line.split(":", 2)]
             if wanted & set(names.split(","))]  # fmt: skip
    return bool(paths) and all(path.endswith(tail) for path in paths)


def _limit_files(group: PodCgroup) -> tuple[int, int, int]:
    """(quota µs, period µs, memory bytes) as the kernel reports them."""
    files = {f.name: f for path in group.paths for f in path.iterdir()}
    if "cpu.max" in files:  # v2
        quota, period = files["cpu.max"].read_text().split()
        return int(quota), int(period), int(files["memory.max"].read_text())
    return (
        int(files["cpu.cfs_quota_us"].read_text()),
        int(files["cpu.cfs_period_us"].read_text()),
        int(files["memory.limit_in_bytes"].read_text()),
    )


def test_limits_are_written(groups: PodCgroups) -> None:
    group = groups.pod("orders-0", PodLimits(250, 192))
    assert _limit_files(group) == (25_000, CFS_PERIOD_US, 192 * MIB)
    # Asked again (a restarted replica): the same group. New limits: resized in place.
    assert groups.pod("orders-0", PodLimits(250, 192)) is group
    resized = groups.pod("orders-0", PodLimits(750, 192))
    assert resized.paths == group.paths
    assert _limit_files(resized) == (75_000, CFS_PERIOD_US, 192 * MIB)
    assert groups.get("orders-0") is resized


def test_a_busy_process_is_throttled_to_its_quota(
    groups: PodCgroups, spawn: list[subprocess.Popen[bytes]]
) -> None:
    group = groups.pod("busy-0", PodLimits(100, 64))
    process = _python(BUSY, spawn)
    group.add(process.pid)
    assert _in_group(process.pid, group)
    start, started_at = group.cpu_stat(), time.monotonic()
    # 0.3 CPU seconds: 3 s of wall time at 0.1 core, 0.3 s if it were unlimited.
    wait_until(
        lambda: group.cpu_stat().usage_s - start.usage_s >= 0.3,
        "0.3 s of CPU used in the group",
        timeout_s=15,
        poll_s=0.1,
        still_running=lambda: None if process.poll() is None else "the busy loop exited",
    )
    end, elapsed = group.cpu_stat(), time.monotonic() - started_at
    assert end.throttled_periods > start.throttled_periods
    assert end.throttled_s > start.throttled_s
    cores = (end.usage_s - start.usage_s) / elapsed
    # At most its quota (0.1 core), plus one period's worth of slack over ~3 s.
    assert cores <= 0.1 + 0.04, f"{cores:.3f} cores over {elapsed:.1f} s: {start} -> {end}"


def test_an_idle_process_is_not_throttled(
    groups: PodCgroups, spawn: list[subprocess.Popen[bytes]]
) -> None:
    # Two cores' quota for one thread: even Python's start-up burst, with CFS handing
    # out quota in per-CPU slices, stays clear of it.
    group = groups.pod("idle-0", PodLimits(2000, 128))
    process = _python(IDLE, spawn)
    group.add(process.pid)
    wait_until(
        lambda: group.cpu_stat().periods >= 10,
        "the idle process running in 10 periods",
        timeout_s=15,
        poll_s=0.1,
        still_running=lambda: None if process.poll() is None else "the idle loop exited",
    )
    stat = group.cpu_stat()
    assert stat.throttled_periods == 0, stat
    assert stat.usage_s > 0
    assert group.memory_bytes() > 0  # what it allocated since it joined


def test_close_kills_what_is_left_and_removes_every_group(
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    with pod_cgroups("closing") as groups:
        group = groups.pod("left-0", PodLimits(200, 64))
        groups.pod("empty-0", PodLimits(200, 64))
        process = _python(BUSY, spawn)
        group.add(process.pid)
        folders = groups.paths
        assert all(folder.is_dir() for folder in folders)
        groups.close()
        assert process.wait(timeout=10) == -signal.SIGKILL
        assert not any(folder.exists() for folder in folders)
        groups.close()  # idempotent (and again on leaving the with)


def test_two_owners_of_one_name_do_not_collide() -> None:
    with pod_cgroups("twin") as first, pod_cgroups("twin") as second:
        assert first.paths != second.paths
        first.pod("gateway-0", PodLimits(100, 64))
        second.pod("gateway-0", PodLimits(200, 64))
        first.close()
        assert _limit_files(second.pod("gateway-0", PodLimits(200, 64)))[0] == 20_000


def test_groups_of_a_dead_owner_are_removed(groups: PodCgroups) -> None:
    # A pid that is certainly gone: a process of ours, exited and reaped.
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = [folder.parent / f"crashed-{gone.pid}" for folder in groups.paths]
    for folder in stale:
        (folder / "orders-0").mkdir(parents=True)
    try:
        with pod_cgroups("next"):
            assert not any(folder.exists() for folder in stale)
    finally:
        for folder in stale:
            if (folder / "orders-0").exists():
                (folder / "orders-0").rmdir()
            if folder.exists():
                folder.rmdir()


def test_a_cpu_override_changes_only_that_service() -> None:
    limits = chart_limits({"orders": 500})
    assert limits["orders"] == PodLimits(500, CHART_LIMITS["orders"].memory_mib)
    assert {s: limits[s] for s in ("gateway", "inventory")} == {
        s: CHART_LIMITS[s] for s in ("gateway", "inventory")
    }
    assert chart_limits() == dict(CHART_LIMITS)
