"""``shop up`` run as a terminal runs it: restarts what crashes, stops once on Ctrl-C.

``shop up`` is started in a process group of its own, as a shell's job control
does; Ctrl-C is then ``os.killpg(SIGINT)`` on that group, exactly what the terminal
sends. Its replicas are found through /proc (children of ``shop up`` carrying its
data directory), and whatever is left is killed at teardown, replicas included:
they live in sessions of their own and would outlive a killed ``shop up``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import health_serving

from ..support.waiting import process_exited, wait_until


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])  # after "pid (comm) state"


def replica_processes(data_dir: Path, parent: int | None = None) -> dict[int, str]:
    """pid -> pod of the live replica processes of the shop in ``data_dir``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            env = _environ(pid)
            if env.get("SHOP_DATA_DIR") != str(data_dir) or "SHOP_POD_NAME" not in env:
                continue
            if parent is not None and _parent(pid) != parent:
                continue
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue  # exited, not yet reaped
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        found[pid] = env["SHOP_POD_NAME"]
    return found


@dataclass
class ShopUp:
    process: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    plan: AddressPlan

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
        """Polls ``condition``; fails at once if ``shop up`` exits meanwhile, showing its
        output either way."""
        wait_until(
            condition,
            what,
            timeout_s,
            poll_s=0.1,
            still_running=process_exited(self.process, "shop up"),
            describe=self.output,
        )

    def wait_for_output(self, text: str) -> None:
        self.wait_until(lambda: text in self.output(), repr(text))

    def pods(self) -> dict[str, int]:
        """pod -> pid of ``shop up``'s running replicas."""
        return {pod: pid for pid, pod in replica_processes(self.data_dir, self.process.pid).items()}

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)


@pytest.fixture
def shop_up(tmp_path: Path) -> Iterator[Callable[..., ShopUp]]:
    started: list[ShopUp] = []

    def start(*flags: str) -> ShopUp:
        net = free_net()
        data_dir = (tmp_path / f"up{len(started)}").resolve()
        data_dir.mkdir()
        log = data_dir / "up.log"
        command = [
            sys.executable, "-m", "shop.cli.main", "up", "--net", str(net),
            "--data-dir", str(data_dir), *flags,
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200"},
                start_new_session=True,  # a job of its own, as a shell starts it
            )
        up = ShopUp(process, log, data_dir, AddressPlan(net=net))
        started.append(up)
        up.wait_for_output("Ctrl-C stops every replica")
        return up

    try:
        yield start
    finally:
        for up in started:
            if up.process.poll() is None:
                # shop up first, so that nothing restarts the replicas killed next.
                os.killpg(up.process.pid, signal.SIGKILL)
                up.process.wait(timeout=30)
            for pid in replica_processes(up.data_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_killed_replica_is_restarted_and_shop_up_keeps_running(
    shop_up: Callable[..., ShopUp],
) -> None:
    up = shop_up(
        "--gateway", "1", "--orders", "2", "--inventory", "1",
        "--restart-backoff", "0.2", "--restart-backoff-max", "1",
    )  # fmt: skip
    before = up.pods()
    assert set(before) == {"gateway-0", "orders-0", "orders-1", "inventory-0"}
    victim = before["orders-1"]
    address = up.plan.grpc_addr("orders", 1)

    os.kill(victim, signal.SIGKILL)

    def back() -> bool:
        pid = up.pods().get("orders-1")
        return pid is not None and pid != victim and health_serving(address)

    up.wait_until(back, "orders-1 SERVING again with a new pid")
    up.wait_for_output(f"orders-1 SERVING again on {address}")
    output = up.output()
    assert (
        f"orders-1 (pid {victim}) exited unexpectedly: killed by SIGKILL; restart #1 in 0.2 s"
        in output
    )
    assert f"orders-1 restarted: pid {up.pods()['orders-1']}, restarts 1" in output
    assert "replica exited unexpectedly" not in output
    # Nobody else was touched, and shop up is still in charge.
    after = up.pods()
    assert {pod: pid for pod, pid in after.items() if pod != "orders-1"} == {
        pod: pid for pod, pid in before.items() if pod != "orders-1"
    }
    assert up.process.poll() is None

    # The restarted replica is stopped like the others.
    up.ctrl_c()
    assert up.process.wait(timeout=60) == 0, up.output()
    assert "stopped: 4 of 4 replicas exited 0 after draining" in up.output()


def _drain_signals(log: Path) -> list[str]:
    """The signal named by each "draining" line of a replica's JSON log."""
    signals = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("msg") == "draining":
                signals.append(str(entry.get("signal")))
    return signals


def test_ctrl_c_stops_every_replica_once(shop_up: Callable[..., ShopUp]) -> None:
    up = shop_up("--gateway", "1", "--orders", "2", "--inventory", "2")
    pods = up.pods()
    assert len(pods) == 5

    up.ctrl_c()

    assert up.process.wait(timeout=60) == 0, up.output()
    output = up.output()
    assert "non-zero exits" not in output, output
    assert "stopped: 5 of 5 replicas exited 0 after draining" in output, output
    assert not re.search(r"restarted|exited unexpectedly", output), output
    assert replica_processes(up.data_dir) == {}
    # One signal each, from shop up: the terminal's SIGINT never reached a replica.
    for pod in pods:
        assert _drain_signals(up.data_dir / "logs" / f"{pod}.log") == ["SIGTERM"], pod
