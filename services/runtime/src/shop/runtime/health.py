"""The standard async health service, plus a way to end Watch streams at shutdown.

Every round_robin client with health checking keeps a Watch stream open to each
replica. ``server.stop(grace)`` waits for open streams, so without ending them a
stopping replica would always wait out the whole grace period. They are ended
after the drain delay: by then every watcher has seen NOT_SERVING, and the
connection is about to get a GOAWAY anyway.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer


class HealthService(HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._closing = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((watch, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            closing.cancel()
        error = watch.exception() if watch.done() and not watch.cancelled() else None
        if error is not None:
            raise error

    def end_watches(self) -> None:
        """Ends every open Watch stream (with OK) and every one started later."""
        self._closing.set()
