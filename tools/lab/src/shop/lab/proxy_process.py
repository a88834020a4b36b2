"""Starting and stopping the lab's proxy processes (HAProxy, Envoy) from its event loop.

They are spawned with :mod:`subprocess`, not with the event loop's subprocess support:
uvloop spawns with ``fork()``, which runs gRPC's fork handlers in the child while the lab
has gRPC threads busy (the readiness watches, the xDS server), and children crashed
before ``exec`` that way (Envoy got SIGSEGV). ``subprocess`` spawns with vfork, which
runs no handlers. Each proxy gets a session of its own, so a signal to the lab's
terminal does not reach it before the lab stops it in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path


async def spawn(argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Starts ``argv`` with stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as log_file:
        return await asyncio.to_thread(
            subprocess.Popen,
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


async def stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``grace_s``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    if not await wait_exit(process, grace_s):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await wait_exit(process, grace_s)


async def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Waits (polling, without blocking the loop) for ``process`` to exit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while process.poll() is None:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
