"""How a service stops: the whole sequence lives here, ``server.serve`` only calls it.

On the first SIGTERM or SIGINT (:class:`ShutdownSignal`) a replica follows the
order Kubernetes needs (:func:`drain_and_stop`):

1. health says NOT_SERVING for every service; Watch streams see it at once;
2. the drain delay passes, so clients and endpoint lists notice and send no more;
3. long-lived streams end with OK, together: health Watch streams and whatever the
   service registered with ``Runtime.on_drain`` (:class:`DrainCallbacks`); their
   clients subscribe again on a replica that is staying;
4. ``server.stop(grace)``: in-flight calls get the grace to finish.

Then, however serving ended (a graceful stop, a failed start-up, a cancellation),
:func:`release` stops the server outright and closes what the process holds. A
second signal exits at once, for the operator who does not want to wait out the
drain delay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

import grpc

from shop.runtime.health import HealthService

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


class DrainCallbacks:
    """What runs when the drain delay is over, right before ``server.stop(grace)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._drained = False

    def add(self, callback: Callable[[], None]) -> None:
        if self._drained:
            # Registered too late to wait for the moment: it has passed.
            callback()
            return
        self._callbacks.append(callback)

    def run(self) -> None:
        self._drained = True
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                # One service's broken callback must not keep the others' streams open
                # or the server from stopping.
                log.exception("drain callback failed", extra={"callback": repr(callback)})


async def drain_and_stop(
    server: grpc.aio.Server,
    health: HealthService,
    callbacks: DrainCallbacks,
    *,
    reason: str,
    drain_delay_s: float,
    shutdown_grace_s: float,
) -> None:
    """The graceful stop, steps 1 to 4 above; returns once the server has stopped."""
    started = time.monotonic()
    log.info("draining", extra={"signal": reason, "drain_delay_s": drain_delay_s})
    # NOT_SERVING for every service; Watch streams see it at once.
    await health.enter_graceful_shutdown()
    await asyncio.sleep(drain_delay_s)
    # Health Watch streams and the services' own streams end together, with OK.
    callbacks.run()
    # Calls that reached us but no handler yet (grpc.aio takes them one at a time on
    # this loop; a busy loop leaves some queued in gRPC core) end CANCELLED here: the
    # stop kills that queue before it sends GOAWAY
    # (https://github.com/grpc/grpc/issues/41785). Clients that watch health left
    # during the drain delay; a pick_first client behind an L4 proxy sends until this
    # GOAWAY, and grpc.aio has no GOAWAY without the stop, so nothing here can empty
    # the queue first. The callers' channels retry those calls on another replica
    # (shop.runtime.channels, RETRYABLE_STATUS_CODES).
    await server.stop(shutdown_grace_s)
    log.info("server stopped", extra={"shutdown_s": round(time.monotonic() - started, 3)})


async def release(
    server: grpc.aio.Server,
    close_channels: Callable[[], Awaitable[None]],
    flush_telemetry: Callable[[], None],
) -> None:
    """The last step of every stop, graceful or not."""
    # A no-op after a graceful stop; after a failed start-up or a cancellation it
    # keeps the server from outliving the event loop.
    await server.stop(None)
    await close_channels()
    flush_telemetry()
