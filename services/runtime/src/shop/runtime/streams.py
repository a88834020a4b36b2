"""Bounds on long-lived server streams: how many a replica serves, how many one caller
holds, and how long each may last.

A server stream holds memory for as long as it is open (two call objects on a hop
that passes it on, buffers, the handler's frame: about 50 KiB on the gateway), so
without a cap a client that opens streams in a loop grows a replica until it is
OOM-killed, and everyone else's calls die with it. A refused stream gets
RESOURCE_EXHAUSTED, the code gRPC clients read as "back off", with a message naming
the setting that was hit and a ``QuotaFailure`` detail.

A maximum lifetime keeps streams from pinning a replica forever (a scale-up or a
rollout only moves them as they end) and bounds what a stuck stream can cost. It is
jittered downwards, so streams opened together (after a deploy, a reconnect storm)
do not all end, and come back, in the same second.

A draining replica ends every stream's lifetime at once (``StreamLifetimes.end_all``,
registered with ``Runtime.on_drain``): the streams end OK as at their maximum
lifetime, and their clients subscribe again on a replica that is staying, instead of
being cut by ``server.stop`` after the grace with CANCELLED.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from shop.runtime.config import (
    STREAM_MAX_LIFETIME_S,
    STREAMS_MAX_PER_CALLER,
    STREAMS_MAX_PER_REPLICA,
)
from shop.runtime.errors import ShopError

# A stream lives between (1 - LIFETIME_JITTER) and 1 times the maximum lifetime.
LIFETIME_JITTER = 0.1


@dataclass(frozen=True)
class StreamConfig:
    max_per_replica: int
    max_per_caller: int
    max_lifetime_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StreamConfig:
        env = os.environ if environ is None else environ
        return cls(
            max_per_replica=STREAMS_MAX_PER_REPLICA.read(env),
            max_per_caller=STREAMS_MAX_PER_CALLER.read(env),
            max_lifetime_s=STREAM_MAX_LIFETIME_S.read(env),
        )

    def lifetime_s(self) -> float:
        """This stream's lifetime: the maximum, shortened by a random share of up to
        LIFETIME_JITTER (never lengthened: the documented maximum holds)."""
        return self.max_lifetime_s * (1 - LIFETIME_JITTER * random.random())


class StreamLimitExceeded(ShopError):
    """A stream refused because a cap is reached; the message names the setting."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, subject: str) -> None:
        super().__init__(message)
        self.subject = subject

    def details(self) -> list[any_pb2.Any]:
        failure = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=self.subject, description=str(self)
                )
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(failure)
        return [packed]


class StreamLimiter:
    """Counts the open streams of one kind on this replica, in total and per caller.

    ``max_per_caller=None`` applies only the replica cap (a caller that is itself a
    replica fanning in many users' streams, capped per user where they come in).
    Single-threaded (one event loop), so the counts need no lock: nothing awaits
    between checking a cap and taking a slot.
    """

    def __init__(
        self, service: str, what: str, max_per_replica: int, max_per_caller: int | None
    ) -> None:
        self._service = service
        self._what = what
        self.max_per_replica = max_per_replica
        self.max_per_caller = max_per_caller
        self._open = 0
        self._per_caller: dict[str, int] = {}

    @property
    def open(self) -> int:
        return self._open

    def open_for(self, caller_key: str) -> int:
        return self._per_caller.get(caller_key, 0)

    @asynccontextmanager
    async def acquire(self, caller_key: str) -> AsyncIterator[None]:
        """Holds one slot for ``caller_key`` while the block runs; raises
        StreamLimitExceeded (RESOURCE_EXHAUSTED) if a cap is already reached."""
        if self._open >= self.max_per_replica:
            raise StreamLimitExceeded(
                f"this {self._service} replica already serves {self._open} {self._what}, "
                f"its maximum ({STREAMS_MAX_PER_REPLICA.name}={self.max_per_replica}); "
                "try again later",
                subject=f"{self._service}-replica",
            )
        held = self._per_caller.get(caller_key, 0)
        if self.max_per_caller is not None and held >= self.max_per_caller:
            raise StreamLimitExceeded(
                f"{caller_key!r} already has {held} {self._what} open on this "
                f"{self._service} replica, the maximum per caller "
                f"({STREAMS_MAX_PER_CALLER.name}={self.max_per_caller}); close one first",
                subject=f"caller:{caller_key}",
            )
        self._open += 1
        self._per_caller[caller_key] = held + 1
        try:
            yield
        finally:
            self._open -= 1
            remaining = self._per_caller[caller_key] - 1
            if remaining:
                self._per_caller[caller_key] = remaining
            else:
                # Forgotten at zero, so the map only holds callers with open streams.
                del self._per_caller[caller_key]


class Lifetime:
    """When one stream ends: at its deadline, or earlier if its replica drains."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        # The timeout of the wait in progress, if any, so that ending it reaches it.
        self._waiting: asyncio.Timeout | None = None

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    @asynccontextmanager
    async def timeout(self) -> AsyncIterator[None]:
        """Times one wait of the stream (the next event): TimeoutError once the
        lifetime is over, also when it is ended while the block waits. Only the wait
        is timed, never a ``yield`` to the client: a timeout there would cancel
        whatever the stream's consumer is awaiting at that moment."""
        if self.remaining_s() <= 0:
            raise TimeoutError
        async with asyncio.timeout_at(self._deadline) as waiting:
            self._waiting = waiting
            try:
                yield
            finally:
                self._waiting = None

    def end(self) -> None:
        """Brings the deadline forward to now; a wait in progress ends with TimeoutError."""
        self._deadline = min(self._deadline, asyncio.get_running_loop().time())
        if self._waiting is not None and not self._waiting.expired():
            self._waiting.reschedule(self._deadline)


class StreamLifetimes:
    """The lifetimes of one kind of stream on this replica, so that the drain can end
    them all: ``end_all`` is the callback for ``Runtime.on_drain``. Ending a lifetime
    cancels only the wait for the stream's next event, which the handler turns into
    a normal return (OK), exactly as at the maximum lifetime."""

    def __init__(self, config: StreamConfig) -> None:
        self._config = config
        self._open: set[Lifetime] = set()
        self._ended = False

    @property
    def open(self) -> int:
        return len(self._open)

    @contextmanager
    def start(self) -> Iterator[Lifetime]:
        """A new stream's (jittered) lifetime, ended by ``end_all`` while the block runs."""
        loop = asyncio.get_running_loop()
        lifetime = Lifetime(loop.time() + self._config.lifetime_s())
        if self._ended:
            # Started after the drain ended the others (it was already being set up).
            lifetime.end()
        self._open.add(lifetime)
        try:
            yield lifetime
        finally:
            self._open.discard(lifetime)

    def end_all(self) -> None:
        """Ends every open stream's lifetime now, and those of streams started later."""
        self._ended = True
        for lifetime in self._open:
            lifetime.end()
