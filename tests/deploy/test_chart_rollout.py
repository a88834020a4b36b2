"""Rollouts: the chart's Deployments and the lab's rollout pace pods the same way."""

from __future__ import annotations

import pytest

from shop.lab.runner import LabSettings

from ..support.chart import ChartRenderer

SERVICES = ("gateway", "orders", "inventory")


@pytest.mark.parametrize("mode", ["clusterip", "headless", "istio", "proxyless"])
def test_every_service_waits_min_ready_seconds_before_the_next_pod_goes(
    render_chart: ChartRenderer, mode: str
) -> None:
    rendered = render_chart(mode)
    for service in SERVICES:
        spec = rendered.get("Deployment", f"shop-{service}")["spec"]
        assert spec["minReadySeconds"] == 2, service
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, service
    assert (
        render_chart(mode, {"minReadySeconds": 7}).get("Deployment", "shop-orders")["spec"][
            "minReadySeconds"
        ]
        == 7
    )


def test_the_lab_rolls_out_at_the_charts_pace(render_chart: ChartRenderer) -> None:
    spec = render_chart("headless").get("Deployment", "shop-inventory")["spec"]
    assert LabSettings.min_ready_s == spec["minReadySeconds"]
