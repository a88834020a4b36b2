"""The lab's result records: what ``lab.json`` and ``shop lab --json`` hold keeps its
keys for scripts, and reads back into the same records."""

from __future__ import annotations

import json
import time

import pytest

from shop.lab.load import LoadReport
from shop.lab.results import (
    Bucket,
    CpuSample,
    CpuTimeline,
    Event,
    FixedRate,
    LabResults,
    Machine,
    ModeCost,
    ModeResult,
    NodeClientShares,
    OfferedRate,
    PhaseCalls,
    PodCpu,
    ScaleUp,
    SteadyState,
    Timeline,
)
from shop.loadgen.stats import CallResult, RunInfo, Stats
from shop.loadgen.timeline import Timeline as LoadTimeline


def _results() -> LabResults:
    timeline = Timeline(
        start_unix=1_700_000_000.25,
        bucket_s=0.5,
        buckets=(
            Bucket(0.0, 10, 0, {"inventory": {"inventory-0": 5, "inventory-1": 5}}),
            Bucket(0.5, 0, 0),
            Bucket(1.0, 12, 2, {"inventory": {"inventory-2": 10}}),
        ),
    )
    mode = ModeResult(
        name="headless-no-maxage",
        description="DNS + round_robin",
        steady=SteadyState(
            calls=1000,
            calls_per_s=100.0,
            p50_ms=1.5,
            p99_ms=9.25,
            shares={"inventory": {"inventory-0": 0.5, "inventory-1": 0.5}},
            imbalance={"inventory": 1.0},
            cpu_s_per_1000_calls=None,
            failures=0,
            status_counts={"OK": 1000},
            pods=(PodCpu("inventory-0", 0.25, 0.2, 0.125, 0.5),),
            cost=ModeCost(
                app_cpu_s_per_1000_calls=4.5,
                proxy_cpu_s_per_1000_calls=2.0,
                proxies=5,
                proxy_rss_mib=40.5,
                proxied_requests=1500,
                proxy_shares={"inventory": {"inventory-0": 0.5, "inventory-1": 0.5}},
            ),
        ),
        fixed_rate=FixedRate(
            rate=60.0,
            objective_ms=250.0,
            calls=600,
            dropped=1,
            p50_ms=12.5,
            p99_ms=80.0,
            within_objective=0.99,
            goodput_per_s=59.4,
            timeouts=2,
            failures=3,
            status_counts={"OK": 597, "DEADLINE_EXCEEDED": 2, "UNAVAILABLE": 1},
            pods=(
                PodCpu("inventory-0", 0.25, 0.25, 0.5, 1.25),
                PodCpu("orders-0", None, 0.1, 0, 0),
            ),
        ),
        cpu_timeline=CpuTimeline(
            interval_s=0.5,
            pods={"inventory-0": (CpuSample(0.0, 0.25, 0.4), CpuSample(0.5, 0.1, 0.0))},
            limits={"inventory-0": 0.25},
        ),
        retries={"inventory": 3},
        scale_up=ScaleUp(start=2, end=3, first_traffic_s=None, fair_share_s=0.75, window_s=15.0),
        rollout=PhaseCalls(calls=12, failures=2),
        scale_down=PhaseCalls(calls=0, failures=0),
        failures_total=2,
        status_counts={"OK": 20, "UNAVAILABLE": 2},
        timeline=timeline,
        events=(Event(1.0, "scale-up", "inventory 2->3 ready"), Event(1.2, "restart")),
        control_plane={"dns_queries": 7},
        node_client=NodeClientShares(
            target="dns://127.9.0.53:53/inventory.shop.svc.cluster.local:50051",
            calls=300,
            failures=0,
            shares={"inventory-0": 0.5, "inventory-1": 0.5},
        ),
    )
    machine = Machine(cpus=2, python="3.11.9", grpcio="1.76.0", platform="Linux")
    offered = OfferedRate(
        rate=60.0,
        load_factor=0.6,
        capacity_per_s=100.0,
        bottleneck="orders",
        cpu_ms_per_call={"orders": 5.0},
        measured_in="clusterip",
    )
    return LabResults(modes=(mode,), settings={"steady_s": 10.0}, machine=machine, offered=offered)


def test_results_read_back_from_their_json() -> None:
    results = _results()
    document = json.loads(json.dumps(results.to_json()))
    assert LabResults.from_json(document) == results
    assert LabResults.from_json(document).mode("headless-no-maxage") == results.modes[0]


def test_the_json_keeps_the_keys_scripts_read() -> None:
    document = json.loads(json.dumps(_results().to_json()))
    assert set(document) == {"settings", "machine", "offered", "modes"}
    assert document["offered"]["rate"] == 60.0
    mode = document["modes"]["headless-no-maxage"]
    assert set(mode) == {
        "description", "steady", "fixed_rate", "scale_up", "rollout", "scale_down",
        "failures_total", "status_counts", "timeline", "events", "control_plane",
        "cpu_timeline", "retries", "node_client",
    }  # fmt: skip
    assert mode["node_client"]["shares"] == {"inventory-0": 0.5, "inventory-1": 0.5}
    assert set(mode["steady"]) == {
        "calls", "calls_per_s", "p50_ms", "p99_ms", "shares", "imbalance",
        "cpu_s_per_1000_calls", "failures", "status_counts", "pods", "cost",
    }  # fmt: skip
    assert mode["steady"]["pods"][0] == {
        "pod": "inventory-0", "limit_cores": 0.25, "cores": 0.2, "throttled_share": 0.125,
        "throttled_s": 0.5,
    }  # fmt: skip
    assert set(mode["fixed_rate"]) == {
        "rate", "objective_ms", "calls", "dropped", "p50_ms", "p99_ms", "within_objective",
        "goodput_per_s", "timeouts", "failures", "status_counts", "pods",
    }  # fmt: skip
    assert mode["cpu_timeline"]["pods"]["inventory-0"][0] == [0.0, 0.25, 0.4]
    assert mode["retries"] == {"inventory": 3}
    assert mode["scale_up"] == {
        "from": 2, "to": 3, "first_traffic_s": None, "fair_share_s": 0.75, "window_s": 15.0,
    }  # fmt: skip
    assert mode["rollout"] == {"calls": 12, "failures": 2}
    assert set(mode["timeline"]) == {"start_unix", "bucket_s", "buckets"}
    assert mode["timeline"]["buckets"][2] == {
        "t": 1.0, "calls": 12, "failures": 2, "per_hop": {"inventory": {"inventory-2": 10}},
    }  # fmt: skip
    assert mode["events"][1] == {"t": 1.2, "kind": "restart", "detail": ""}


def test_a_timeline_picks_the_buckets_overlapping_a_window() -> None:
    timeline = _results().modes[0].timeline
    assert [b.t for b in timeline.overlapping(0.6, 1.1)] == [0.5, 1.0]
    assert timeline.overlapping(2.0, 3.0) == []


def test_the_lab_reads_what_shop_load_reports() -> None:
    started = time.time()  # the loader buckets calls by the wall clock
    timeline = LoadTimeline(bucket_s=0.5, start_unix=started)
    stats = Stats(timeline)
    route = "gateway/gateway-0 orders/orders-0 inventory/inventory-1"
    stats.record(CallResult("PlaceOrder", "OK", route), 0.012)
    stats.record(CallResult("PlaceOrder", "UNAVAILABLE"), 0.5)
    info = RunInfo("place", "closed", "ipv4:127.0.0.1:1", "pick_first", 1, 4, None, 2.0, 0.0)
    document = json.loads(json.dumps(stats.summarize(info, {"inventory": 2}).to_json()))
    report = LoadReport.from_json(document)
    assert report.calls == 2 and report.failures == 1
    assert report.per_hop["inventory"] == {"inventory-1": 1}
    assert report.imbalance["inventory"] == 2.0  # one of two expected pods served
    assert report.status_counts == {"OK": 1, "UNAVAILABLE": 1}
    assert report.timeline is not None and report.timeline.start_unix == started


def test_a_sidecars_cpu_is_put_in_istios_unit() -> None:
    """vCPU per 1,000 requests/s through one sidecar: 1,000 calls cost the proxies 2 s,
    1,500 requests were proxied, each through two sidecars: 2 / 3,000 s per pass."""
    cost = _results().modes[0].steady.cost
    assert cost is not None
    assert cost.proxy_cpu_per_1000_rps(1000) == pytest.approx(2.0 / 3000 * 1000)
    assert ModeCost(1.0, None, 0, None).proxy_cpu_per_1000_rps(1000) is None


def test_added_latency_is_the_difference_at_the_same_rate() -> None:
    results = _results()
    assert results.added_latency("headless-no-maxage", "proxyless") is None
    same = results.added_latency("headless-no-maxage", "headless-no-maxage")
    assert same is not None and same.p50_ms == 0 and same.p99_ms == 0


def test_the_mesh_cost_lines_are_what_the_terminal_and_the_page_say() -> None:
    # One mode: no added latency to compare; its sidecars' CPU in Istio's unit.
    assert _results().mesh_cost_lines() == [
        "headless-no-maxage: each sidecar used 0.67 vCPU per 1,000 requests/s through it "
        "(1,500 requests proxied, each through two sidecars)"
    ]
