"""``shop up --limits``: pods in cgroups with the chart's limits (``--cpu-limit`` to
change a service's CPU); bad values and missing cgroups are one clear line."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shop.cli.main import main
from shop.local.addresses import free_net
from shop.local.cpu import child_pids

from ..support.cgroups import make_cgroups_unavailable, require_cgroups
from ..support.waiting import wait_until


@pytest.mark.parametrize(
    "value", ["orders", "orders=", "orders=fast", "orders=0", "orders=0.0001", "payments=1"]
)
def test_bad_cpu_limit_is_named(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["up", "--limits", "--cpu-limit", value])
    assert exit_info.value.code == 2
    assert "argument --cpu-limit" in capsys.readouterr().err


def test_missing_cgroups_is_one_line_naming_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_cgroups_unavailable(monkeypatch, "no cgroup v1 memory controller mounted")
    argv = ["up", "--limits", "--net", str(free_net()), "--data-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "shop up: --limits: no cgroup v1 memory controller mounted"
    )
    assert "Traceback" not in err


def _group_dirs(pid: int, marker: str) -> set[Path]:
    """The directories, in every mounted hierarchy, of ``pid``'s cgroups under
    ``marker`` (a path part such as grpc-shop/shop-123)."""
    mounts = [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]
    dirs = set()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        path = line.split(":", 2)[2]
        if marker in path:
            dirs |= {m / path.lstrip("/") for m in mounts if (m / path.lstrip("/")).is_dir()}
    return dirs


def test_up_with_limits(tmp_path: Path) -> None:
    require_cgroups()
    command = [
        sys.executable, "-m", "shop.cli.main", "up", "--limits", "--net", str(free_net()),
        "--gateway", "1", "--orders", "1", "--inventory", "1", "--data-dir", str(tmp_path),
        # Generous: start-up at the chart's 250m would take a while on a busy machine.
        "--cpu-limit", "orders=1", "--cpu-limit", "inventory=1500m", "--no-restart",
    ]  # fmt: skip
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"}
        )
    replicas: list[int] = []
    try:
        wait_until(
            lambda: "Ctrl-C stops every replica" in log.read_text(),
            "shop up serving",
            timeout_s=120,
            poll_s=0.2,
            still_running=lambda: None if process.poll() is None else "shop up exited",
            describe=log.read_text,
        )
        output = log.read_text()
        # The table shows each pod's limits: the chart's, with the --cpu-limit ones.
        assert re.search(r"gateway-0 .* cpu 500m, memory 256Mi", output), output
        assert re.search(r"orders-0 .* cpu 1000m, memory 256Mi", output), output
        assert re.search(r"inventory-0 .* cpu 1500m, memory 256Mi", output), output
        replicas = child_pids(process.pid)
        assert len(replicas) == 3
        marker = f"grpc-shop/shop-{process.pid}/"
        dirs = set().union(*(_group_dirs(pid, marker) for pid in replicas))
        assert len(dirs) >= 3, dirs  # a group per pod (in each hierarchy)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        assert not any(d.exists() for d in dirs), dirs
        assert not any(d.parent.exists() for d in dirs)  # shop up's own folder too
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in replicas:  # in sessions of their own: they outlive a killed shop up
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
