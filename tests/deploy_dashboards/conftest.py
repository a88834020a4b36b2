"""Fixtures for the dashboard tests: a real, empty Prometheus.

Prometheus is the project's own ``shop.local.prometheus`` (the Debian binary on a free
loopback port, no scrape targets): it is only there to parse PromQL the way the
Prometheus behind Grafana will.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shop.local.prometheus import PrometheusServer, PrometheusUnavailable, start_prometheus


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus with an empty TSDB: every query parses or fails, none returns data."""
    try:
        server = start_prometheus(tmp_path_factory.mktemp("prometheus"), targets={})
    except PrometheusUnavailable as error:
        pytest.fail(
            f"{error}\nThese tests need a real Prometheus to parse the dashboards' queries.",
            pytrace=False,
        )
    try:
        yield server
    finally:
        server.stop()
