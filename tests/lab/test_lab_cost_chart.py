"""The page's cost chart: a bar per mode, the apps' CPU per 1,000 calls with the
proxies' stacked on it, drawn to one scale; modes without a cost record left out."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shop.lab.cost_chart import cost_chart_svg
from shop.lab.page import render_html
from shop.lab.results import (
    LabResults,
    ModeCost,
    ModeResult,
    PhaseCalls,
    ScaleUp,
    SteadyState,
    Timeline,
)

from .page_probe import svgs_of


def _mode(name: str, cost: ModeCost | None) -> ModeResult:
    steady = SteadyState(
        calls=1000, calls_per_s=100.0, p50_ms=1.0, p99_ms=2.0,
        shares={"inventory": {"inventory-0": 1.0}}, imbalance={"inventory": 1.0},
        cpu_s_per_1000_calls=None, failures=0, cost=cost,
    )  # fmt: skip
    return ModeResult(
        name=name,
        description="",
        steady=steady,
        scale_up=ScaleUp(start=2, end=4, first_traffic_s=None, fair_share_s=None, window_s=5),
        rollout=PhaseCalls(0, 0),
        scale_down=PhaseCalls(0, 0),
        failures_total=0,
        status_counts={},
        timeline=Timeline(start_unix=0.0, bucket_s=0.5, buckets=()),
        events=(),
        control_plane={},
    )


MODES = (
    _mode("headless", ModeCost(3.0, None, 0, None)),
    _mode("istio", ModeCost(3.5, 2.5, 5, 40.0, 3000)),
    _mode("old", None),
)


def _bars(chart: ET.Element) -> dict[str, list[ET.Element]]:
    return {
        str(group.get("data-mode")): group.findall("rect")
        for group in chart.iter()
        if group.get("data-mode") is not None
    }


def test_a_bar_per_mode_with_the_proxies_stacked_on_the_apps() -> None:
    chart = ET.fromstring(cost_chart_svg(MODES))
    bars = _bars(chart)
    assert set(bars) == {"headless", "istio"}  # no cost record, no bar
    (headless_apps,) = bars["headless"]
    istio_apps, istio_proxies = bars["istio"]

    def span(rect: ET.Element) -> tuple[float, float]:
        left = float(rect.get("x") or 0)
        return left, left + float(rect.get("width") or 0)

    # One scale: widths are proportional to the seconds (coordinates in tenths of a
    # pixel), the proxies start where the apps end.
    unit = (span(headless_apps)[1] - span(headless_apps)[0]) / 3.0
    assert span(istio_apps)[1] - span(istio_apps)[0] == pytest.approx(3.5 * unit, abs=0.2)
    assert span(istio_proxies)[0] == span(istio_apps)[1]
    assert span(istio_proxies)[1] - span(istio_proxies)[0] == pytest.approx(2.5 * unit, abs=0.2)
    titles = [rect.findtext("title") for rect in (istio_apps, istio_proxies)]
    assert titles == ["istio: apps 3.50 s", "istio: proxies 2.50 s"]


def test_no_cost_records_no_chart() -> None:
    assert cost_chart_svg(MODES[2:]) == ""
    page = render_html(LabResults(modes=MODES[2:]))
    assert 'data-chart="cost"' not in page


def test_the_page_shows_the_chart_and_the_mesh_sentence() -> None:
    page = render_html(LabResults(modes=MODES))
    charts = [s for s in svgs_of(page) if s.get("data-chart") == "cost"]
    assert len(charts) == 1
    # Istio's unit: 2.5 s per 1,000 calls = 2.5 s over 3,000 requests through 2 sidecars.
    assert "each sidecar used 0.42 vCPU per 1,000 requests/s" in page
