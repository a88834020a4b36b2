"""Turns a load timeline and the events the lab caused into the lab's figures.

Times are read off the loader's timeline buckets, so their resolution is the bucket
size (``--bucket``, 0.5 s by default): "first traffic 0.25 s after the scale-up"
means the first calls on a new pod completed in the bucket that started when the
new pod was announced.
"""

from __future__ import annotations

from collections.abc import Sequence

from shop.lab.results import Bucket, PhaseCalls, Timeline

FAIR_SHARE_FRACTION = 0.8


def _seconds_since(timeline: Timeline, bucket: Bucket, since: float) -> float:
    """From ``since`` to the bucket's middle: a call in it completed about then."""
    return max(0.0, bucket.t + timeline.bucket_s / 2 - since)


def time_to_first_traffic(
    timeline: Timeline, service: str, new_pods: Sequence[str], since: float, until: float
) -> float | None:
    """Seconds from ``since`` until a call to any of ``new_pods`` completed; None if never."""
    for bucket in timeline.overlapping(since, until):
        served = bucket.served(service)
        if any(served.get(pod, 0) > 0 for pod in new_pods):
            return _seconds_since(timeline, bucket, since)
    return None


def time_to_fair_share(
    timeline: Timeline,
    service: str,
    new_pods: Sequence[str],
    pods_after: int,
    since: float,
    until: float,
) -> float | None:
    """Seconds until every new pod serves >= 80% of an even share (1 / pods_after)."""
    target = FAIR_SHARE_FRACTION / pods_after
    for bucket in timeline.overlapping(since, until):
        served = bucket.served(service)
        total = sum(served.values())
        if total and all(served.get(pod, 0) / total >= target for pod in new_pods):
            return _seconds_since(timeline, bucket, since)
    return None


def rounded(seconds: float | None) -> float | None:
    """A time as the results keep it: to the hundredth of a second (None stays)."""
    return None if seconds is None else round(seconds, 2)


def phase_calls(timeline: Timeline, start: float, end: float) -> PhaseCalls:
    """Calls that completed in the buckets overlapping [start, end), and failures."""
    chosen = timeline.overlapping(start, end)
    return PhaseCalls(calls=sum(b.calls for b in chosen), failures=sum(b.failures for b in chosen))
