"""The lab's chart page, rendered from synthetic results (read from their JSON) and read
back.

The page is checked the way a browser and a reader would meet it: the HTML nests
properly and every chart is well-formed SVG (parsed with ``xml.etree``); the numbers
drawn are the ones in the data (calls per *second*, on a y-scale shared by the modes);
a pod that only gets traffic after a scale-up starts on the baseline; events are
marked and labelled; nothing is fetched from anywhere and no text from the results
can inject markup.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from shop.lab.page import render_html, write_page
from shop.lab.results import LabResults

from .page_probe import (
    Structure,
    baseline,
    points,
    rows_by_mode,
    structure_of,
    svgs_of,
    y_ticks,
)

BUCKET_S = 0.5
SCALE_UP_T = 2.0  # seconds; the new pod's first calls land in the bucket at 3.0
NEW_POD = "inventory-2"


def _bucket(t: float, inventory: dict[str, int], failures: int = 0) -> dict[str, Any]:
    calls = sum(inventory.values()) + failures
    return {
        "t": t,
        "calls": calls,
        "failures": failures,
        "per_hop": {
            "gateway": {"gateway-0": calls - failures},
            "orders": {"orders-0": (calls - failures) // 2, "orders-1": (calls - failures) // 2},
            "inventory": inventory,
        },
    }


def _mode(
    description: str,
    buckets: list[dict[str, Any]],
    events: list[dict[str, Any]],
    first_traffic_s: float | None,
    rollout_failures: int = 0,
) -> dict[str, Any]:
    return {
        "description": description,
        "steady": {
            "calls": 800,
            "calls_per_s": 80.0,
            "p50_ms": 1.25,
            "p99_ms": 7.5,
            "shares": {
                "orders": {"orders-0": 0.5, "orders-1": 0.5},
                "inventory": {"inventory-0": 0.5, "inventory-1": 0.5},
            },
            "imbalance": {"orders": 1.0, "inventory": 1.04},
            "cpu_s_per_1000_calls": 1.5,
            "failures": 0,
        },
        "scale_up": {
            "from": 2,
            "to": 3,
            "first_traffic_s": first_traffic_s,
            "fair_share_s": None if first_traffic_s is None else first_traffic_s + 0.5,
            "window_s": 10.0,
        },
        "rollout": {"failures": rollout_failures, "calls": 400},
        "scale_down": {"failures": 0, "calls": 300},
        "failures_total": rollout_failures,
        "status_counts": {"OK": 1000},
        "timeline": {"start_unix": 1_700_000_000.0, "bucket_s": BUCKET_S, "buckets": buckets},
        "events": events,
    }


def _scaling_mode() -> dict[str, Any]:
    """Two pods, then a third that serves nothing until a second after the scale-up."""
    buckets = []
    for i in range(12):
        t = i * BUCKET_S
        inventory = {"inventory-0": 20, "inventory-1": 20}
        if t >= SCALE_UP_T + 1.0:
            inventory = {"inventory-0": 14, "inventory-1": 13, NEW_POD: 13}
        buckets.append(_bucket(t, inventory))
    events = [{"t": SCALE_UP_T, "kind": "scale-up", "detail": "inventory 2 -> 3"}]
    return _mode("Servers age connections out.", buckets, events, first_traffic_s=1.0)


def _failing_mode() -> dict[str, Any]:
    """Failures during a restart; the description tries to inject a script."""
    buckets = []
    for i in range(12):
        t = i * BUCKET_S
        failures = 6 if t in (2.5, 3.0) else 0
        buckets.append(_bucket(t, {"inventory-0": 30, "inventory-1": 10}, failures))
    events = [
        {"t": 2.5, "kind": "restart", "detail": "inventory-0"},
        {"t": 5.0, "kind": "scale-down", "detail": "inventory 3 -> 2"},
    ]
    description = 'One virtual IP <script>alert("x")</script> & friends.'
    return _mode(description, buckets, events, first_traffic_s=None, rollout_failures=12)


@pytest.fixture(scope="module")
def results() -> LabResults:
    return LabResults.from_json(
        {
            "settings": {"bucket_s": BUCKET_S, "note": "<b>not bold</b>"},
            "modes": {"headless": _scaling_mode(), "clusterip": _failing_mode()},
        }
    )


@pytest.fixture(scope="module")
def page(results: LabResults) -> str:
    return render_html(results)


@pytest.fixture(scope="module")
def svgs(page: str) -> list[ET.Element]:
    return svgs_of(page)


def _chart(svgs: list[ET.Element], mode: str, hop: str) -> ET.Element:
    (found,) = [s for s in svgs if s.get("data-mode") == mode and s.get("data-hop") == hop]
    return found


def _polyline(svg: ET.Element, pod: str) -> ET.Element:
    (found,) = [p for p in svg.iter("polyline") if p.get("data-pod") == pod]
    return found


@pytest.fixture(scope="module")
def structure(page: str) -> Structure:
    return structure_of(page)


def test_page_is_well_formed_html_with_one_chart_per_mode_and_hop(
    page: str, structure: Structure, svgs: list[ET.Element]
) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert structure.errors == []
    assert structure.stack == []
    charts = {(s.get("data-mode"), s.get("data-hop")) for s in svgs}
    modes = ("headless", "clusterip")
    assert len(svgs) == 4
    assert charts == {(m, h) for m in modes for h in ("inventory", "orders")}


def test_every_mode_and_pod_is_named(page: str, svgs: list[ET.Element]) -> None:
    for mode in ("headless", "clusterip"):
        assert f"<h2>{mode}</h2>" in page
        legend = [t.text for t in _chart(svgs, mode, "inventory").iter("text")]
        assert {"inventory-0", "inventory-1"} <= set(legend)
        assert {"orders-0", "orders-1"} <= {
            t.text for t in _chart(svgs, mode, "orders").iter("text")
        }
    assert NEW_POD in [t.text for t in _chart(svgs, "headless", "inventory").iter("text")]


def test_summary_table_has_a_row_per_mode_and_never_for_no_traffic(
    structure: Structure,
) -> None:
    (table,) = structure.tables  # no fixed-rate run in these results: no table of it
    assert table[0][0] == "mode"
    by_mode = rows_by_mode(table)
    assert list(by_mode) == ["headless", "clusterip"]
    clusterip = by_mode["clusterip"]
    assert clusterip["scale-up: first call on a new pod"] == "never"
    assert clusterip["scale-up: 80% fair share"] == "never"
    assert clusterip["rollout failed / calls"] == "12 / 400"
    scaling = by_mode["headless"]
    assert scaling["scale-up: first call on a new pod"] == "1.0 s"
    assert scaling["scale-up: 80% fair share"] == "1.5 s"
    assert scaling["p50 ms"] == "1.2"  # one decimal: 1.25 ms
    assert scaling["inventory imbalance"] == "1.04"


def test_a_pod_without_calls_before_the_scale_up_starts_on_the_baseline(
    svgs: list[ET.Element],
) -> None:
    chart = _chart(svgs, "headless", "inventory")
    floor = baseline(chart)
    line = points(_polyline(chart, NEW_POD))
    assert len(line) == 12
    first_served = int((SCALE_UP_T + 1.0) / BUCKET_S)
    assert [y for _, y in line[:first_served]] == [floor] * first_served
    assert all(y < floor for _, y in line[first_served:])
    xs = [x for x, _ in line]
    assert xs == sorted(xs)


def test_lines_are_calls_per_second_on_a_y_scale_shared_by_the_modes(
    svgs: list[ET.Element],
) -> None:
    inventory = [_chart(svgs, m, "inventory") for m in ("headless", "clusterip")]
    scales = [y_ticks(svg) for svg in inventory]
    assert scales[0] == scales[1]
    # The busiest pod: 30 calls per 0.5 s bucket in clusterip, i.e. 60 calls/s.
    assert list(scales[0]) == ["0", "20", "40", "60"]
    y_0, y_60 = scales[0]["0"], scales[0]["60"]
    assert baseline(inventory[1]) == y_0
    busiest = points(_polyline(inventory[1], "inventory-0"))
    assert {y for _, y in busiest} == {y_60}
    per_s_40 = y_0 + (y_60 - y_0) * 40 / 60  # 20 calls per 0.5 s bucket
    assert points(_polyline(inventory[0], "inventory-0"))[0][1] == pytest.approx(per_s_40, abs=0.1)


def test_a_pod_has_one_color_in_every_chart(svgs: list[ET.Element]) -> None:
    for pod, hop in (
        ("inventory-0", "inventory"),
        ("inventory-1", "inventory"),
        ("orders-1", "orders"),
    ):
        strokes = {
            _polyline(_chart(svgs, mode, hop), pod).get("stroke")
            for mode in ("headless", "clusterip")
        }
        assert len(strokes) == 1
    chart = _chart(svgs, "headless", "inventory")
    pods = ("inventory-0", "inventory-1", NEW_POD)
    assert len({_polyline(chart, pod).get("stroke") for pod in pods}) == 3


def test_events_are_marked_and_labelled(svgs: list[ET.Element]) -> None:
    for mode, kinds in (
        ("headless", ["scale-up"]),
        ("clusterip", ["restart", "scale-down"]),
    ):
        for hop in ("inventory", "orders"):
            chart = _chart(svgs, mode, hop)
            events = [g for g in chart.iter("g") if g.get("class") == "event"]
            assert [g.get("data-kind") for g in events] == kinds
            for group, kind in zip(events, kinds, strict=True):
                (label,) = group.iter("text")
                assert label.text == kind
                (line,) = group.iter("line")
                assert line.get("stroke-dasharray")
                assert float(line.get("y2") or "nan") == baseline(chart)
    # The scale-up line sits between the buckets at 1.5 s and 2.5 s (points at mid-bucket).
    chart = _chart(svgs, "headless", "inventory")
    (line,) = [e for e in chart.iter("line") if e.get("data-t") == "2"]
    xs = [x for x, _ in points(_polyline(chart, "inventory-0"))]
    assert xs[3] < float(line.get("x1") or "nan") < xs[5]


def test_failures_are_drawn_only_where_calls_failed(svgs: list[ET.Element]) -> None:
    failing = _chart(svgs, "clusterip", "inventory")
    bars = [r for g in failing.iter("g") if g.get("class") == "failures" for r in g.iter("rect")]
    assert len(bars) == 2
    scale = y_ticks(failing)
    # 6 failures per 0.5 s bucket: 12 failures/s.
    expected_top = scale["0"] + (scale["60"] - scale["0"]) * 12 / 60
    assert [float(r.get("y") or "nan") for r in bars] == pytest.approx([expected_top] * 2, abs=0.1)
    # Each bar spans its bucket: centred on the lines' points for 2.5 s and 3.0 s.
    centres = [float(r.get("x") or "nan") + float(r.get("width") or "nan") / 2 for r in bars]
    xs = [x for x, _ in points(_polyline(failing, "inventory-0"))]
    assert centres == pytest.approx([xs[5], xs[6]], abs=0.1)
    assert "failures/s (all calls)" in {t.text for t in failing.iter("text")}
    calm = _chart(svgs, "headless", "inventory")
    assert not [g for g in calm.iter("g") if g.get("class") == "failures"]


def test_page_is_self_contained_and_escapes_text(page: str, structure: Structure) -> None:
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page.lower()
    assert "src=" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; friends." in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert 'One virtual IP <script>alert("x")</script> & friends.' in "".join(structure.texts)


def test_a_pod_that_never_got_a_call_is_counted_in_the_legend() -> None:
    quiet = _failing_mode()
    quiet["scale_up"]["to"] = 4
    page = render_html(LabResults.from_json({"settings": {}, "modes": {"headless": quiet}}))
    assert "+2 scaled-up pod(s) with no calls" in page


def test_a_mode_without_timeline_still_renders() -> None:
    empty = _failing_mode()
    empty["timeline"]["buckets"] = []
    empty["events"] = []
    page = render_html(LabResults.from_json({"settings": {}, "modes": {"empty": empty}}))
    root = svgs_of(page)[0]
    assert "no timeline recorded" in {t.text for t in root.iter("text")}


def test_write_page_creates_the_file(results: LabResults, tmp_path: Path) -> None:
    path = write_page(results, tmp_path / "out" / "lab.html")
    assert path == tmp_path / "out" / "lab.html"
    assert path.read_text(encoding="utf-8") == render_html(results)
