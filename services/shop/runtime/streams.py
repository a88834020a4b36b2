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
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
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
