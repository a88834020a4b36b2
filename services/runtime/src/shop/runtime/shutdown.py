"""Signal handling for a graceful stop, owned by one helper for every server.

The first SIGTERM or SIGINT starts the graceful sequence; a second one exits at
once, for the operator who does not want to wait out the drain delay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)


class ShutdownSignal:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.received: str | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._event.is_set():
            log.warning("second %s: exiting without draining", sig.name)
            os._exit(128 + sig.value)
        self.received = sig.name
        self._event.set()

    def trigger(self, reason: str) -> None:
        self.received = reason
        self._event.set()

    async def wait(self) -> str:
        await self._event.wait()
        return self.received or "unknown"
