"""The chart's resources.limits and the lab's pod cgroups are one set of numbers:
``shop up --limits`` and the lab throttle a pod exactly where a cluster would."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shop.local.cgroups import CHART_LIMITS, PodLimits

from ..support.chart import ChartRenderer


def _chart_limits(chart_dir: Path) -> dict[str, PodLimits]:
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    limits = {}
    for service in CHART_LIMITS:
        given = values[service]["resources"]["limits"]
        limits[service] = PodLimits(
            PodLimits.parse_cpu(given["cpu"]), PodLimits.parse_memory(given["memory"])
        )
    return limits


def test_values_limits_are_the_labs(chart_dir: Path) -> None:
    assert _chart_limits(chart_dir) == dict(CHART_LIMITS)


@pytest.mark.parametrize("service", sorted(CHART_LIMITS))
def test_rendered_pods_carry_the_limits(service: str, render_chart: ChartRenderer) -> None:
    deployment = render_chart("clusterip").get("Deployment", f"shop-{service}")
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == service
    ]
    limits = container["resources"]["limits"]
    expected = CHART_LIMITS[service]
    assert PodLimits.parse_cpu(limits["cpu"]) == expected.cpu_millis
    assert PodLimits.parse_memory(limits["memory"]) == expected.memory_mib
