"""``shop bench --profile DIR``: py-spy samples every chain process while it is measured.

One ``py-spy record`` per process and measurement (one per round), started before
the loader and stopped (SIGINT: py-spy writes its file and exits) after it, so the
samples cover the same stretch as the CPU the bench reads from ``/proc``.

How py-spy runs, and why:

- ``--format raw``: collapsed stacks, which :mod:`shop.bench.stacks` sorts into
  categories (the flame graph is drawn from them by :mod:`shop.bench.flamegraph`).
- ``--nonblocking``: py-spy reads the process's memory without stopping it. Stopping
  a process a hundred times a second costs it real time, and on this two-core machine
  the stopped threads then wait for a core in state R, which py-spy takes for work:
  measured on the chain, the blocking mode counted idle threads (the aiosqlite worker
  waiting on its queue, the /metrics server in poll()) as busy. A non-blocking sample
  may now and then read a stack that is changing (py-spy counts those as errors).
- ``--threads``: the thread's name leads each stack, which is how gRPC's poller
  thread (Cython, no Python frame) is recognised.
- No ``--native``: unwinding C stacks needs the blocking mode and cut the chain's
  calls/s by a third when tried. What that leaves unseen is in :mod:`shop.bench.stacks`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from shop.bench.breakdown import ThreadCpu
from shop.bench.flamegraph import render_svg
from shop.bench.stacks import Stack, parse_collapsed

FLAG = "--profile"
SAMPLE_RATE_HZ = 100
INSTALL_HINT = "make venv (tools/lab depends on py-spy), or: pip install 'py-spy>=0.4'"
# What py-spy prints once it samples, and when it wrote its file.
_SAMPLING = "Sampling process"
_WROTE = re.compile(r"Samples: (?P<samples>\d+) Errors: (?P<errors>\d+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProfileError(RuntimeError):
    """py-spy is missing, cannot attach, or did not write its samples."""


def find_py_spy() -> str | None:
    """The py-spy executable: the one installed beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def check_attach(py_spy: str, processes: Mapping[str, int], timeout_s: float = 30.0) -> None:
    """Raises :class:`ProfileError` unless py-spy can read every one of ``processes``
    (``py-spy dump`` once each): before the run, not after minutes of it."""
    for name, pid in processes.items():
        try:
            result = subprocess.run(
                [py_spy, "dump", "--nonblocking", "--pid", str(pid)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise ProfileError(
                f"{FLAG}: py-spy could not read {name} (pid {pid}) within {timeout_s:g}s"
            ) from None
        if result.returncode != 0:
            raise ProfileError(
                f"{FLAG}: py-spy cannot attach to {name} (pid {pid}): "
                f"{(result.stderr or result.stdout).strip()[-500:]} "
                "(py-spy needs root or CAP_SYS_PTRACE to read another process)"
            )


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Thread id -> (OS name, user + system CPU seconds so far) of ``pid``'s threads;
    empty if ``/proc`` cannot tell (then the breakdown weighs threads by samples)."""
    threads = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            name = (task / "comm").read_text(encoding="utf-8", errors="replace").strip()
            # As in shop.local.cpu: fields after the ')' of the name; utime, stime.
            fields = (task / "stat").read_text(encoding="ascii").rpartition(")")[2].split()
            threads[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return threads


@dataclass(frozen=True)
class Recorded:
    """One process's samples from one measurement."""

    process: str
    raw_path: Path
    stacks: Counter[Stack]
    # What py-spy itself reported: samples taken and samples it could not read.
    samples: int
    errors: int


class Recording:
    """``py-spy record`` on one process; :meth:`stop` ends it and reads its stacks."""

    def __init__(self, py_spy: str, process: str, pid: int, raw_path: Path) -> None:
        self.process = process
        self.pid = pid
        self.raw_path = raw_path
        self.log_path = raw_path.with_suffix(".log")
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        raw_path.unlink(missing_ok=True)
        command = [
            py_spy, "record", "--pid", str(pid), "--output", str(raw_path),
            "--format", "raw", "--rate", str(SAMPLE_RATE_HZ),
            "--nonblocking", "--threads", "--full-filenames",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_sampling(self, timeout_s: float) -> None:
        """Returns once py-spy says it samples; raises if it exited or took too long."""
        deadline = time.monotonic() + timeout_s
        while _SAMPLING not in self._log():
            if self._process.poll() is not None:
                raise ProfileError(
                    f"{FLAG}: py-spy could not attach to {self.process} (pid {self.pid}), "
                    f"exit {self._process.returncode}: {self._log().strip()[-500:]}"
                )
            if time.monotonic() > deadline:
                raise ProfileError(
                    f"{FLAG}: py-spy did not start sampling {self.process} (pid {self.pid}) "
                    f"within {timeout_s:g}s: {self._log().strip()[-500:]}"
                )
            time.sleep(0.02)

    def stop(self, timeout_s: float = 30.0) -> Recorded:
        """SIGINT (py-spy writes its file and exits); raises if no file came of it."""
        self.kill_quietly(timeout_s)
        log = self._log()
        if not self.raw_path.exists():
            raise ProfileError(
                f"{FLAG}: py-spy wrote no samples for {self.process} (pid {self.pid}), "
                f"exit {self._process.returncode}: {log.strip()[-500:]}"
            )
        counts = _WROTE.search(log)
        with self.raw_path.open(encoding="utf-8", errors="replace") as raw:
            stacks = parse_collapsed(raw)
        samples = int(counts.group("samples")) if counts else sum(stacks.values())
        errors = int(counts.group("errors")) if counts else 0
        return Recorded(self.process, self.raw_path, stacks, samples, errors)

    def kill_quietly(self, timeout_s: float = 30.0) -> None:
        """Ends py-spy whatever state it is in: SIGINT, SIGKILL if it lingers."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class Profiler:
    """Records every chain measurement into ``directory``; keeps the stacks per
    configuration and process for the breakdown and the flame graphs."""

    def __init__(self, directory: Path, py_spy: str) -> None:
        self.directory = directory
        self.py_spy = py_spy
        # (config, process) -> merged stacks over rounds, and py-spy's own counts.
        self.stacks: dict[tuple[str, str], Counter[Stack]] = {}
        self.samples: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        # (config, process) -> thread id -> OS name and CPU seconds while sampled.
        self._threads: dict[tuple[str, str], dict[int, ThreadCpu]] = {}

    def threads(self, config: str, process: str) -> list[ThreadCpu]:
        """The process's threads and their CPU over every recording of ``config``."""
        return list(self._threads.get((config, process), {}).values())

    def _add_thread_cpu(
        self,
        key: tuple[str, str],
        before: Mapping[int, tuple[str, float]],
        after: Mapping[int, tuple[str, float]],
    ) -> None:
        pooled = self._threads.setdefault(key, {})
        for tid, (name, seconds) in after.items():
            # A thread that started meanwhile used all its CPU inside the recording.
            used = seconds - before.get(tid, (name, 0.0))[1]
            earlier = pooled.get(tid)
            pooled[tid] = ThreadCpu(tid, name, used + (earlier.cpu_s if earlier else 0.0))

    def raw_path(self, config: str, round_number: int, process: str) -> Path:
        return self.directory / "raw" / f"{config}-r{round_number}-{process}.txt"

    def svg_path(self, config: str, process: str) -> Path:
        return self.directory / f"{config}-{process}.svg"

    @contextmanager
    def recording(
        self, config: str, round_number: int, processes: Mapping[str, int]
    ) -> Iterator[None]:
        """Samples ``processes`` while the block runs; every py-spy ends with it."""
        with ExitStack() as cleanup:
            recordings = []
            for process, pid in processes.items():
                path = self.raw_path(config, round_number, process)
                recording = Recording(self.py_spy, process, pid, path)
                cleanup.callback(recording.kill_quietly)
                recordings.append(recording)
            for recording in recordings:
                recording.wait_sampling(timeout_s=30.0)
            before = {process: thread_cpu_s(pid) for process, pid in processes.items()}
            yield
            for process, pid in processes.items():
                self._add_thread_cpu((config, process), before[process], thread_cpu_s(pid))
            for recording in recordings:
                recorded = recording.stop()
                key = (config, recorded.process)
                self.stacks.setdefault(key, Counter()).update(recorded.stacks)
                self.samples[key] += recorded.samples
                self.errors[key] += recorded.errors

    def write_flame_graphs(self) -> dict[tuple[str, str], Path]:
        """One SVG per configuration and process, from the stacks of all its rounds."""
        written = {}
        for (config, process), stacks in self.stacks.items():
            path = self.svg_path(config, process)
            path.write_text(render_svg(stacks, f"{config}: {process}"), encoding="utf-8")
            written[(config, process)] = path
        return written
