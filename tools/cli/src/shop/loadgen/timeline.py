"""Per-pod calls over time, for the balancing lab's charts and rebalancing clocks.

A single share for a whole run hides *when* a new replica started to get traffic;
the lab needs exactly that. Calls are bucketed by completion time on the wall
clock (``time.time()``), so the lab can line buckets up with the scale and rollout
events it caused in other processes.

JSON (``"timeline"`` in ``shop load --json`` when ``--timeline SECONDS`` is given)::

    {"start_unix": float, "bucket_s": float,
     "buckets": [{"t": float,            # bucket start, seconds after start_unix
                  "calls": int, "failures": int,
                  "per_hop": {service: {pod: int}}}]}
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shop.runtime.callscope import parse_route


@dataclass
class _Bucket:
    calls: int = 0
    failures: int = 0
    per_hop: dict[str, Counter[str]] = field(default_factory=dict)


class Timeline:
    def __init__(self, bucket_s: float, start_unix: float) -> None:
        if bucket_s <= 0:
            raise ValueError("bucket_s must be positive")
        self.bucket_s = bucket_s
        self.start_unix = start_unix
        self._buckets: dict[int, _Bucket] = {}

    def record(self, route: str | None, failed: bool, now_unix: float) -> None:
        index = max(0, math.floor((now_unix - self.start_unix) / self.bucket_s))
        bucket = self._buckets.setdefault(index, _Bucket())
        bucket.calls += 1
        bucket.failures += int(failed)
        if route:
            for service, pod in parse_route(route).items():
                bucket.per_hop.setdefault(service, Counter())[pod] += 1

    def to_json(self) -> dict[str, Any]:
        last = max(self._buckets, default=-1)
        buckets = []
        for index in range(last + 1):  # empty buckets too: a gap is information
            bucket = self._buckets.get(index, _Bucket())
            buckets.append(
                {
                    "t": round(index * self.bucket_s, 3),
                    "calls": bucket.calls,
                    "failures": bucket.failures,
                    "per_hop": {s: dict(sorted(p.items())) for s, p in bucket.per_hop.items()},
                }
            )
        return {"start_unix": self.start_unix, "bucket_s": self.bucket_s, "buckets": buckets}
