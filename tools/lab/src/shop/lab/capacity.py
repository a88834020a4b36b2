"""The fixed rate every mode is offered: a share of what the replicas can take together.

With CPU limits, a replica of a service can serve at most ``limit / CPU per call``
calls a second, and the service as a whole ``replicas`` times that *if calls are
spread over them*. The chain is as fast as its tightest service. So the lab measures
each service's CPU per call in the first mode's closed-loop run (from the pods'
cgroups: it does not depend on how calls were spread), derives the capacity of the
balanced chain, and offers every mode the same fraction of it (0.6 by default): a
load the balanced modes take comfortably, and one a mode that pins each client to one
pod cannot, because that pod's share is the whole service's.
"""

from __future__ import annotations

from collections.abc import Mapping

from shop.lab.results import OfferedRate, PodCpu, SteadyState, service_of


def cpu_ms_per_call(pods: tuple[PodCpu, ...], calls: int, window_s: float) -> dict[str, float]:
    """CPU milliseconds each service spent per call of the chain over a window."""
    if calls <= 0:
        return {}
    used: dict[str, float] = {}
    for pod in pods:
        used[service_of(pod.pod)] = used.get(service_of(pod.pod), 0.0) + pod.cores * window_s
    return {service: round(seconds / calls * 1000.0, 3) for service, seconds in used.items()}


def derive(
    steady: SteadyState,
    window_s: float,
    replicas: Mapping[str, int],
    limit_cores: Mapping[str, float],
    load_factor: float,
    measured_in: str,
) -> OfferedRate:
    """The offered rate from a closed-loop run's per-pod CPU; without pod CPU figures
    (no limits) a share of that run's throughput instead, said so in the record."""
    costs = cpu_ms_per_call(steady.pods, steady.calls, window_s)
    bounds = {
        service: replicas[service] * limit_cores[service] / (costs[service] / 1000.0)
        for service in replicas
        if service in limit_cores and costs.get(service, 0.0) > 0
    }
    if not bounds:
        capacity, bottleneck = steady.calls_per_s, None
    else:
        bottleneck = min(bounds, key=lambda service: bounds[service])
        capacity = bounds[bottleneck]
    return OfferedRate(
        rate=round(load_factor * capacity, 1),
        load_factor=load_factor,
        capacity_per_s=round(capacity, 1),
        bottleneck=bottleneck,
        cpu_ms_per_call=costs,
        measured_in=measured_in,
    )


def given(rate: float) -> OfferedRate:
    """A rate given on the command line: nothing derived."""
    return OfferedRate(rate=rate, load_factor=1.0, capacity_per_s=None, bottleneck=None)


def describe(offered: OfferedRate, objective_ms: float) -> str:
    """One sentence for the table and the page: the rate, where it comes from, the
    objective."""
    head = f"{offered.rate:g} calls/s offered in every mode"
    if offered.capacity_per_s is None:
        basis = " (--rate)"
    elif offered.bottleneck is None:
        basis = (
            f" = {offered.load_factor:.0%} of {offered.capacity_per_s:g} calls/s, "
            f"{offered.measured_in}'s closed-loop throughput (no pod limits to derive from)"
        )
    else:
        cost = offered.cpu_ms_per_call[offered.bottleneck]
        basis = (
            f" = {offered.load_factor:.0%} of {offered.capacity_per_s:g} calls/s, what the "
            f"{offered.bottleneck} pods can take at their CPU limit and {cost:.1f} ms CPU per "
            f"call (measured in {offered.measured_in}'s closed-loop run)"
        )
    return f"{head}{basis}; objective: a call OK within {objective_ms:g} ms"
