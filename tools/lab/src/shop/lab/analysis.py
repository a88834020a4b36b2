"""Turns a load timeline and the events the lab caused into the lab's figures.

Times are read off the loader's timeline buckets, so their resolution is the bucket
size (``--bucket``, 0.5 s by default): "first traffic 0.25 s after the scale-up"
means the first calls on a new pod completed in the bucket that started when the
new pod was announced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FAIR_SHARE_FRACTION = 0.8


@dataclass(frozen=True)
class Event:
    t: float  # seconds on the timeline's axis
    kind: str  # "scale-up" | "restart" | "scale-down"
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "kind": self.kind, "detail": self.detail}


def _buckets(timeline: Mapping[str, Any], start: float, end: float) -> list[dict[str, Any]]:
    """Buckets that overlap [start, end)."""
    size = float(timeline["bucket_s"])
    return [b for b in timeline["buckets"] if b["t"] + size > start and b["t"] < end]


def _hop(bucket: Mapping[str, Any], service: str) -> dict[str, int]:
    return dict(bucket["per_hop"].get(service, {}))


def time_to_first_traffic(
    timeline: Mapping[str, Any], service: str, new_pods: Sequence[str], since: float, until: float
) -> float | None:
    """Seconds from ``since`` until a call to any of ``new_pods`` completed; None if never."""
    size = float(timeline["bucket_s"])
    for bucket in _buckets(timeline, since, until):
        hop = _hop(bucket, service)
        if any(hop.get(pod, 0) > 0 for pod in new_pods):
            return max(0.0, float(bucket["t"]) + size / 2 - since)
    return None


def time_to_fair_share(
    timeline: Mapping[str, Any],
    service: str,
    new_pods: Sequence[str],
    pods_after: int,
    since: float,
    until: float,
) -> float | None:
    """Seconds until every new pod serves >= 80% of an even share (1 / pods_after)."""
    size = float(timeline["bucket_s"])
    target = FAIR_SHARE_FRACTION / pods_after
    for bucket in _buckets(timeline, since, until):
        hop = _hop(bucket, service)
        total = sum(hop.values())
        if total and all(hop.get(pod, 0) / total >= target for pod in new_pods):
            return max(0.0, float(bucket["t"]) + size / 2 - since)
    return None


def calls_and_failures(timeline: Mapping[str, Any], start: float, end: float) -> tuple[int, int]:
    chosen = _buckets(timeline, start, end)
    return sum(b["calls"] for b in chosen), sum(b["failures"] for b in chosen)
