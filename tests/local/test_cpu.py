"""CPU seconds of local processes from /proc (``shop.local.cpu``), as the bench reads
them for a server that forks a process per connection (PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import time

from shop.local.cpu import process_cpu_s, tree_cpu_s

# Burns about 0.3 s of CPU, then exits.
BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def _wait_for(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_tree_keeps_the_cpu_of_children_that_exited() -> None:
    # A parent that runs one busy child to its end, reaps it, then waits to be stopped.
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
        "print('reaped', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        before = tree_cpu_s(parent.pid)
        assert before is not None
        assert parent.stdout is not None and parent.stdout.readline().strip() == "reaped"
        after = tree_cpu_s(parent.pid)
        own = process_cpu_s(parent.pid)
        assert after is not None and own is not None
        # The child's 0.3 s stay in the tree after it has gone; the parent alone has
        # far less (it mostly waited).
        assert after - own >= 0.25, (after, own)
        assert after >= before
    finally:
        parent.kill()
        parent.wait(timeout=30)
        if parent.stdout is not None:
            parent.stdout.close()


def test_a_tree_counts_live_children() -> None:
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        f"{(BURN + chr(10) + 'import time; time.sleep(60)')!r}])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        _wait_for(lambda: (process_cpu_s(child) or 0.0) >= 0.25)
        total = tree_cpu_s(parent.pid)
        own = process_cpu_s(parent.pid)
        assert total is not None and own is not None
        assert total - own >= 0.25, (total, own)
        subprocess.run(["kill", str(child)], check=False)
    finally:
        parent.kill()
        parent.wait(timeout=30)
        if parent.stdout is not None:
            parent.stdout.close()


def test_a_process_that_is_gone_reads_as_unknown() -> None:
    done = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert done.returncode == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    assert tree_cpu_s(gone.pid) is None
    assert process_cpu_s(gone.pid) is None
