"""The signal helper: the first SIGTERM asks for a graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal

from shop.runtime.shutdown import ShutdownSignal


async def test_trigger_wakes_the_waiter_with_its_reason() -> None:
    shutdown = ShutdownSignal()
    waiter = asyncio.create_task(shutdown.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    shutdown.trigger("rollout")
    assert await asyncio.wait_for(waiter, 5) == "rollout"


async def test_sigterm_starts_the_graceful_stop() -> None:
    loop = asyncio.get_running_loop()
    shutdown = ShutdownSignal()
    shutdown.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(shutdown.wait(), 5) == "SIGTERM"
        assert shutdown.received == "SIGTERM"
    finally:
        # Only one signal here: a second one would exit this process, by design
        # (the end-to-end tests check that on a replica).
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
