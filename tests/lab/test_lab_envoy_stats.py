"""The lab's Envoy exposes what the dashboards' mesh row queries.

The mode-comparison dashboard reads Envoy's cluster stats by Istio's ``cluster_name``
tag (tests/deploy_dashboards/test_mode_comparison_dashboard.py); the lab's sidecars
are configured with the same tag. Here a real sidecar's ``/stats/prometheus`` is
scraped and every Envoy metric and cluster selector of those panels must find the
outbound cluster of each service there.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shop.lab.envoy import Envoy
from shop.lab.sidecar_resources import SidecarPod
from shop.lab.xds import XdsControlPlane
from shop.local.addresses import free_net

from ..deploy_dashboards.test_mode_comparison_dashboard import (
    METRIC,
    as_grafana_sends,
    cluster_selectors,
    envoy_panels,
)

SAMPLE = re.compile(r'^(envoy_\w+)\{cluster_name="([^"]*)"\} ')


@pytest.fixture
async def scrape(tmp_path: Path) -> AsyncIterator[str]:
    net = free_net()
    control_plane = XdsControlPlane(host=f"127.{net}.0.15")
    await control_plane.start()
    pod = SidecarPod("gateway", 0, f"127.{net}.1.1")
    control_plane.add_sidecar(pod, 50051)
    envoy = Envoy(pod, control_plane.address, tmp_path)
    try:
        await envoy.start()
        status, body = await envoy.admin("/stats/prometheus")
        assert status == 200
        yield body
    finally:
        await envoy.close()
        await control_plane.close()


async def test_every_envoy_panel_finds_each_services_cluster(scrape: str) -> None:
    series = {(m.group(1), m.group(2)) for m in map(SAMPLE.match, scrape.splitlines()) if m}
    # Istio's tag only: Envoy's default envoy_cluster_name (cut at the first dot) is off.
    upstream = [line for line in scrape.splitlines() if line.startswith("envoy_cluster_upstream_")]
    assert upstream and not [line for line in upstream if "envoy_cluster_name=" in line]
    for title, panel in envoy_panels().items():
        metrics = {m for target in panel["targets"] for m in METRIC.findall(target["expr"])}
        for regex in cluster_selectors(panel):
            for service in ("orders", "inventory"):
                selector = re.compile(as_grafana_sends(regex, (service,)))
                for metric in metrics:
                    found = [c for name, c in series if name == metric and selector.fullmatch(c)]
                    assert found == [f"outbound|50051||{service}.shop.svc.cluster.local"], (
                        title,
                        metric,
                        service,
                    )
