"""The page's CPU charts and fixed-rate figures, from results built as records.

Three modes: two ran with cgroups (per-pod CPU sampled, a fixed-rate run) and one is
as an older ``lab.json`` has it, without either. Checked: a CPU chart per mode and
charted service with a line per pod at the sampled cores, the pod's limit as a rule
at its level, the throttled share in a band under it, events marked through both, one
y-scale across the modes and the pods' colors from the calls/s charts; the summary
and fixed-rate tables' cells; the sentence saying how the rate was chosen; and that
the page still renders, and escapes, without the new figures.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shop.lab.cpu_chart import BAND_HEIGHT
from shop.lab.page import NO_CPU, ScenarioLink, render_html
from shop.lab.results import (
    Bucket,
    CpuSample,
    CpuTimeline,
    Event,
    FixedRate,
    LabResults,
    ModeResult,
    OfferedRate,
    PhaseCalls,
    PodCpu,
    ScaleUp,
    SteadyState,
    Timeline,
)

from .page_probe import (
    Structure,
    baseline,
    group,
    groups,
    path_runs,
    points,
    rows_by_mode,
    structure_of,
    svgs_of,
    y_ticks,
)

BUCKET_S = 0.5
INTERVAL_S = 1.0
SCALE_UP_T = 2.0
RESTART_T = 4.0
INVENTORY_LIMIT = 0.25
ORDERS_LIMIT = 0.5


def _timeline() -> Timeline:
    buckets = []
    for i in range(12):
        t = i * BUCKET_S
        inventory = {"inventory-0": 10, "inventory-1": 10}
        if t >= SCALE_UP_T + 1.0:
            inventory["inventory-2"] = 10
        per_hop = {"orders": {"orders-0": 10, "orders-1": 10}, "inventory": inventory}
        buckets.append(Bucket(t, 20, 0, per_hop))
    return Timeline(1_700_000_000.0, BUCKET_S, tuple(buckets))


def _steady(pods: tuple[PodCpu, ...] = ()) -> SteadyState:
    return SteadyState(
        calls=800,
        calls_per_s=80.0,
        p50_ms=1.25,
        p99_ms=7.5,
        shares={"orders": {"orders-0": 0.5}, "inventory": {"inventory-0": 0.5}},
        imbalance={"orders": 1.0, "inventory": 1.0},
        cpu_s_per_1000_calls=1.5,
        failures=0,
        pods=pods,
    )


def _samples(
    cores: list[float], start: float = 0.0, throttled: float = 0.0
) -> tuple[CpuSample, ...]:
    return tuple(
        CpuSample(start + i * INTERVAL_S, c, throttled if c >= INVENTORY_LIMIT else 0.0)
        for i, c in enumerate(cores)
    )


def _cpu(peak: float) -> CpuTimeline:
    """inventory-1 restarts (no sample at 4 s); inventory-2 starts after the scale-up;
    the gateway is sampled but not charted."""
    restarting = _samples([0.2, 0.2, 0.2, 0.2]) + _samples([0.2], start=5.0)
    pods = {
        "inventory-0": _samples([0.1, peak, 0.2, 0.2, 0.2, 0.2], throttled=0.5),
        "inventory-1": restarting,
        "inventory-2": _samples([0.15, 0.15, 0.15], start=3.0),
        "orders-0": _samples([0.3] * 6),
        "orders-1": _samples([0.3] * 6),
        "gateway-0": _samples([0.9] * 6),
    }
    limits = {pod: INVENTORY_LIMIT for pod in pods if pod.startswith("inventory")}
    limits |= {"orders-0": ORDERS_LIMIT, "orders-1": ORDERS_LIMIT}
    return CpuTimeline(INTERVAL_S, pods, limits)


def _fixed_rate(p99_ms: float) -> FixedRate:
    return FixedRate(
        rate=60.0,
        objective_ms=250.0,
        calls=600,
        dropped=1,
        p50_ms=12.5,
        p99_ms=p99_ms,
        within_objective=0.975,
        goodput_per_s=58.5,
        timeouts=2,
        failures=3,
        status_counts={"OK": 597, "DEADLINE_EXCEEDED": 2, "<UNAVAILABLE>": 1},
        pods=(
            PodCpu("inventory-0", INVENTORY_LIMIT, 0.24, 0.4, 1.25),
            PodCpu("inventory-1", INVENTORY_LIMIT, 0.2, 0.1, 0.5),
            PodCpu("orders-0", ORDERS_LIMIT, 0.31, 0.0, 0.0),
            PodCpu("orders-1", ORDERS_LIMIT, 0.33, 0.05, 0.2),
        ),
    )


def _mode(
    name: str,
    cpu: CpuTimeline | None = None,
    fixed_rate: FixedRate | None = None,
    retries: dict[str, int] | None = None,
    steady_pods: tuple[PodCpu, ...] = (),
) -> ModeResult:
    return ModeResult(
        name=name,
        description=f"{name} <mode>",
        steady=_steady(steady_pods),
        scale_up=ScaleUp(start=2, end=3, first_traffic_s=1.0, fair_share_s=1.5, window_s=10.0),
        rollout=PhaseCalls(calls=400, failures=0),
        scale_down=PhaseCalls(calls=300, failures=0),
        failures_total=0,
        status_counts={"OK": 1000},
        timeline=_timeline(),
        events=(
            Event(SCALE_UP_T, "scale-up", "inventory 2 -> 3"),
            Event(RESTART_T, "restart", "inventory-1"),
        ),
        fixed_rate=fixed_rate,
        cpu_timeline=cpu,
        retries=retries or {},
    )


OFFERED = OfferedRate(
    rate=60.0,
    load_factor=0.6,
    capacity_per_s=100.0,
    bottleneck="orders",
    cpu_ms_per_call={"orders": 5.0, "inventory": 2.0},
    measured_in="headless",
)
BOTTLENECK = (PodCpu("orders-0", 0.25, 0.2, 0.0, 0.0), PodCpu("orders-1", 0.25, 0.2, 0.0, 0.0))


def _results(offered: OfferedRate | None = OFFERED) -> LabResults:
    return LabResults(
        modes=(
            _mode(
                "headless",
                _cpu(peak=0.3),
                _fixed_rate(p99_ms=80.0),
                {"inventory": 3, "orders": 0},
                BOTTLENECK,
            ),
            _mode("proxyless", _cpu(peak=0.45), _fixed_rate(p99_ms=40.0)),
            _mode("clusterip"),  # as an older lab.json has it: no CPU, no fixed rate
        ),
        offered=offered,
    )


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(_results())


@pytest.fixture(scope="module")
def svgs(page: str) -> list[ET.Element]:
    return svgs_of(page)


@pytest.fixture(scope="module")
def structure(page: str) -> Structure:
    return structure_of(page)


def _cpu_chart(svgs: list[ET.Element], mode: str, service: str) -> ET.Element:
    (found,) = [
        s
        for s in svgs
        if s.get("data-chart") == "cpu"
        and s.get("data-mode") == mode
        and s.get("data-service") == service
    ]
    return found


def _calls_chart(svgs: list[ET.Element], mode: str, hop: str) -> ET.Element:
    (found,) = [s for s in svgs if s.get("data-mode") == mode and s.get("data-hop") == hop]
    return found


def _path(element: ET.Element, pod: str) -> ET.Element:
    (found,) = [p for p in element.iter("path") if p.get("data-pod") == pod]
    return found


def _level(ticks: dict[str, float], top: str, value: float) -> float:
    """The y of ``value`` on an axis whose ticks run from "0" to ``top``."""
    return ticks["0"] + (ticks[top] - ticks["0"]) * value / float(top)


# --- the CPU charts -----------------------------------------------------------------


def test_a_cpu_chart_per_charted_service_where_cpu_was_sampled(
    page: str, svgs: list[ET.Element], structure: Structure
) -> None:
    assert structure.errors == []
    assert structure.stack == []
    cpu = {(s.get("data-mode"), s.get("data-service")) for s in svgs if s.get("data-chart")}
    assert cpu == {(m, s) for m in ("headless", "proxyless") for s in ("inventory", "orders")}
    # The mode without samples says why it has no CPU chart, once.
    (section,) = [p for p in page.split("<section")[1:] if 'id="mode-2"' in p]
    assert section.count(NO_CPU) == 1
    assert "gateway-0" not in page


def test_a_line_per_pod_at_the_cores_it_used(svgs: list[ET.Element]) -> None:
    chart = _cpu_chart(svgs, "headless", "inventory")
    panel = group(chart, "cpu")
    assert {p.get("data-pod") for p in panel.iter("path")} == {
        "inventory-0",
        "inventory-1",
        "inventory-2",
    }
    ticks = y_ticks(panel)
    assert list(ticks) == [
        "0",
        "0.1",
        "0.2",
        "0.3",
        "0.4",
        "0.5",
    ]  # shared: proxyless peaks at 0.45
    (run,) = path_runs(_path(panel, "inventory-0"))
    expected = [_level(ticks, "0.5", c) for c in (0.1, 0.3, 0.2, 0.2, 0.2, 0.2)]
    assert [y for _, y in run] == pytest.approx(expected, abs=0.1)
    # Points sit mid-interval on the calls/s chart's x-axis: the first, at 0.5 s, between
    # the calls/s chart's first two points (bucket middles at 0.25 s and 0.75 s).
    calls = points(next(iter(_calls_chart(svgs, "headless", "inventory").iter("polyline"))))
    assert calls[0][0] < run[0][0] < calls[1][0]
    assert [x for x, _ in run] == sorted(x for x, _ in run)
    # The restarted pod's line breaks where it had no sample; the new pod's starts late.
    restarted = path_runs(_path(panel, "inventory-1"))
    assert [len(r) for r in restarted] == [4, 1]
    (late,) = path_runs(_path(panel, "inventory-2"))
    assert late[0][0] == pytest.approx(run[3][0], abs=0.1)


def test_each_limit_is_a_dashed_rule_at_its_level(svgs: list[ET.Element]) -> None:
    for service, limit in (("inventory", INVENTORY_LIMIT), ("orders", ORDERS_LIMIT)):
        panel = group(_cpu_chart(svgs, "headless", service), "cpu")
        ticks = y_ticks(panel)
        top = max(ticks, key=float)
        (rule,) = group(panel, "limits").iter("line")
        assert rule.get("data-limit") == f"{limit:g}"
        assert rule.get("stroke-dasharray")
        assert float(rule.get("y1") or "nan") == pytest.approx(_level(ticks, top, limit), abs=0.1)
        assert rule.get("y1") == rule.get("y2")
        title = rule.findtext("title") or ""
        assert f"{limit:g} core" in title
        assert f"{service}-0" in title
        assert f"{service}-1" in title


def test_throttling_is_a_band_under_the_cpu_panel(svgs: list[ET.Element]) -> None:
    chart = _cpu_chart(svgs, "headless", "inventory")
    band = group(chart, "throttling")
    ticks = y_ticks(band)
    assert list(ticks) == ["0", "50", "100"]
    assert ticks["0"] - ticks["100"] == pytest.approx(BAND_HEIGHT)
    assert ticks["0"] > baseline(group(chart, "cpu"))
    (run,) = path_runs(_path(band, "inventory-0"))
    # Throttled half the periods only in the interval it reached its limit (the second).
    expected = [ticks["0"], _level(ticks, "100", 50.0), *[ticks["0"]] * 4]
    assert [y for _, y in run] == pytest.approx(expected, abs=0.1)
    # The x-axis is labelled once, under the band.
    x_title = "seconds since the start of the run"
    assert [t.text for t in chart.iter("text")].count(x_title) == 1


def test_events_are_marked_through_both_panels(svgs: list[ET.Element]) -> None:
    for service in ("inventory", "orders"):
        chart = _cpu_chart(svgs, "proxyless", service)
        events = groups(chart, "event")
        assert [g.get("data-kind") for g in events] == ["scale-up", "restart"]
        top = min(y_ticks(group(chart, "cpu")).values())
        for marker in events:
            (line,) = marker.iter("line")
            assert float(line.get("y1") or "nan") < top
            assert float(line.get("y2") or "nan") == baseline(group(chart, "throttling"))
            assert line.findtext("title")


def test_one_y_scale_and_one_color_per_pod_across_the_charts(svgs: list[ET.Element]) -> None:
    for service in ("inventory", "orders"):
        charts = [_cpu_chart(svgs, m, service) for m in ("headless", "proxyless")]
        assert y_ticks(group(charts[0], "cpu")) == y_ticks(group(charts[1], "cpu"))
    for mode in ("headless", "proxyless"):
        calls = _calls_chart(svgs, mode, "inventory")
        cpu = _cpu_chart(svgs, mode, "inventory")
        for pod in ("inventory-0", "inventory-1", "inventory-2"):
            (line,) = [p for p in calls.iter("polyline") if p.get("data-pod") == pod]
            assert _path(group(cpu, "cpu"), pod).get("stroke") == line.get("stroke")
            assert _path(group(cpu, "throttling"), pod).get("stroke") == line.get("stroke")


def test_a_service_without_limits_has_no_throttling_band() -> None:
    cpu = CpuTimeline(INTERVAL_S, {"orders-0": _samples([0.1, 0.2])})
    page = render_html(LabResults(modes=(_mode("headless", cpu),)))
    chart = _cpu_chart(svgs_of(page), "headless", "orders")
    assert not groups(chart, "throttling")
    assert not list(group(chart, "limits").iter("line"))
    # The CPU panel is the lowest: it labels the x-axis.
    assert "seconds since the start of the run" in {t.text for t in chart.iter("text")}
    # No inventory pod was sampled in any mode: no inventory CPU chart.
    assert [s.get("data-service") for s in svgs_of(page) if s.get("data-chart")] == ["orders"]


# --- the tables and the sentence ----------------------------------------------------


def test_the_fixed_rate_table_shows_each_modes_run(structure: Structure, page: str) -> None:
    summary, rates = structure.tables
    by_mode = rows_by_mode(rates)
    assert list(by_mode) == ["headless", "proxyless", "clusterip"]
    headless = by_mode["headless"]
    assert headless["offered calls/s"] == "60"
    assert headless["not sent"] == "1"
    assert headless["p50 / p99 ms"] == "12.50 / 80.00"
    assert headless["within objective"] == "97.5%"
    assert headless["goodput calls/s"] == "58.5"
    assert headless["timeouts / failed"] == "2 / 3"
    assert headless["busiest orders pod: cores / limit · throttled"] == "0.33 / 0.5 · 5%"
    assert headless["busiest inventory pod: cores / limit · throttled"] == "0.24 / 0.25 · 40%"
    assert by_mode["proxyless"]["p50 / p99 ms"] == "12.50 / 40.00"
    assert by_mode["clusterip"]["offered calls/s"] == "not run"
    assert set(list(by_mode["clusterip"].values())[2:]) == {"-"}
    retries = {mode: row["retries (events run)"] for mode, row in rows_by_mode(summary).items()}
    assert retries == {"headless": "3", "proxyless": "-", "clusterip": "-"}
    assert "inventory 3 · orders 0" in page


def test_the_cells_tooltips_name_the_pod_and_the_statuses(page: str) -> None:
    assert 'title="orders-1: throttled 0.2 s in all"' in page
    assert "OK 597, DEADLINE_EXCEEDED 2, &lt;UNAVAILABLE&gt; 1" in page
    assert "<UNAVAILABLE>" not in page


def test_a_sentence_says_how_the_rate_was_chosen_and_what_the_objective_is(
    structure: Structure,
) -> None:
    text = "".join(structure.texts)
    assert (
        "60 calls/s offered in every mode = 60% of 100 calls/s, what 2 orders pods at "
        "0.25 core can take at 5.0 ms CPU per call, measured in headless's closed-loop run."
    ) in text
    assert "within 250 ms of when it was due to be sent" in text


def test_a_rate_given_on_the_command_line_is_said_to_be_given() -> None:
    given = OfferedRate(rate=40.0, load_factor=1.0, capacity_per_s=None, bottleneck=None)
    text = "".join(structure_of(render_html(_results(given))).texts)
    assert "40 calls/s offered in every mode, the rate given (--rate)" in text
    unrecorded = "".join(structure_of(render_html(_results(None))).texts)
    assert "60 calls/s offered in every mode." in unrecorded


def test_results_without_the_new_figures_render_as_before() -> None:
    """An older lab.json: no CPU, no fixed-rate run, no offered rate, no retries."""
    page = render_html(LabResults(modes=(_mode("clusterip"), _mode("headless"))))
    structure = structure_of(page)
    assert structure.errors == []
    (summary,) = structure.tables
    assert {row["retries (events run)"] for row in rows_by_mode(summary).values()} == {"-"}
    svgs = svgs_of(page)
    assert len(svgs) == 4
    assert not [s for s in svgs if s.get("data-chart") == "cpu"]
    assert NO_CPU not in page
    assert 'class="offered"' not in page
    assert "fixed rate" not in page.lower()


def test_text_from_the_results_is_escaped(page: str) -> None:
    assert "<mode>" not in page
    assert "headless &lt;mode&gt;" in page
    odd = CpuTimeline(
        INTERVAL_S, {'orders-<blink>"x"': _samples([0.1])}, {'orders-<blink>"x"': 0.5}
    )
    marked = render_html(LabResults(modes=(_mode("a<blink>", odd),), offered=OFFERED))
    assert "<blink>" not in marked
    chart = _cpu_chart(svgs_of(marked), "a<blink>", "orders")
    assert {p.get("data-pod") for p in chart.iter("path")} == {'orders-<blink>"x"'}
    assert "<script" not in marked.lower()
    assert "http" not in marked


def test_scenario_pages_beside_the_lab_page_are_linked() -> None:
    assert "Scenarios" not in render_html(_results())
    links = [ScenarioLink("slow-pod.html", "a slow pod", "who keeps sending it <calls>?")]
    page = render_html(_results(), links)
    assert '<section class="scenarios">' in page
    assert '<a href="slow-pod.html">a slow pod</a>' in page
    assert "who keeps sending it &lt;calls&gt;?" in page
