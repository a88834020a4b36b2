"""Waiting for a condition instead of sleeping a fixed time: one home for the polling
loop every test that waits on another process, a server or a proxy uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

# Short enough that a test never waits long after the condition holds, long enough not
# to steal a core from the processes it waits on (a 2-core CI machine).
POLL_S = 0.05


def _failure(message: str, describe: Callable[[], str] | None) -> AssertionError:
    return AssertionError(message if describe is None else f"{message}\n{describe()}")


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float = 60.0,
    *,
    poll_s: float = POLL_S,
    still_running: Callable[[], str | None] | None = None,
    describe: Callable[[], str] | None = None,
) -> None:
    """Polls ``condition`` until it holds; fails naming ``what`` after ``timeout_s``.

    ``still_running`` returns a reason to fail at once (a process that exited, say) or
    None: a wait on something that is gone should not run out its whole timeout.
    ``describe`` adds what the failure should show (a process's output, the last state
    seen) to either failure."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if still_running is not None and (gone := still_running()) is not None:
            raise _failure(f"while waiting for {what}: {gone}", describe)
        if time.monotonic() > deadline:
            raise _failure(f"not within {timeout_s} s: {what}", describe)
        time.sleep(poll_s)


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    timeout_s: float = 60.0,
    *,
    poll_s: float = POLL_S,
    still_running: Callable[[], str | None] | None = None,
    describe: Callable[[], str] | None = None,
) -> None:
    """``wait_until`` for the event loop: the condition may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if still_running is not None and (gone := still_running()) is not None:
            raise _failure(f"while waiting for {what}: {gone}", describe)
        if loop.time() > deadline:
            raise _failure(f"not within {timeout_s} s: {what}", describe)
        await asyncio.sleep(poll_s)


class _Process(Protocol):
    def poll(self) -> int | None: ...


def process_exited(process: _Process, name: str) -> Callable[[], str | None]:
    """A ``still_running`` check: fails the wait once ``process`` has exited."""

    def check() -> str | None:
        code = process.poll()
        return None if code is None else f"{name} exited with {code}"

    return check
