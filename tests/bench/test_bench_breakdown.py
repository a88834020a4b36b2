"""Sharing the measured CPU per call out over categories: processes and threads by
their measured CPU, each thread by its samples; and the flame graph drawn from them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shop.bench.breakdown import ProcessProfile, ThreadCpu, cpu_breakdown, split_process
from shop.bench.flamegraph import render_svg
from shop.bench.stacks import Category, CategoryCounts

G, S, L, R = Category.GRPC, Category.STORAGE, Category.EVENT_LOOP, Category.REST


def counts(empty: int = 0, **samples: int) -> CategoryCounts:
    return CategoryCounts({c: samples.get(c.value, 0) for c in Category}, empty)


def test_threads_weigh_by_their_measured_cpu_not_by_their_samples() -> None:
    profile = ProcessProfile(
        cpu_s=1.0,
        counts_by_thread={
            # The loop thread: 3 storage samples to 1 event-loop one (and 2 empty).
            1: counts(storage=3, event_loop=1, empty=2),
            # The poller: many samples (it wakes all the time), little CPU.
            2: counts(grpc=400),
        },
        threads=[
            ThreadCpu(1, "python", 0.8),
            ThreadCpu(2, "python", 0.1),
            ThreadCpu(3, "event_engine", 0.05),  # gRPC core: never sampled
            ThreadCpu(4, "python", 0.05),  # a Python thread py-spy never caught
            ThreadCpu(5, "python", 0.0),  # idle: no weight
        ],
        python_names={1: "MainThread", 2: "Thread-1 (_poll_wrapper)"},
    )
    split = split_process("orders", 1000.0, profile)
    assert split.categories_us[S] == pytest.approx(1000 * 0.8 * 3 / 4)
    assert split.categories_us[L] == pytest.approx(1000 * 0.8 * 1 / 4)
    assert split.categories_us[G] == pytest.approx(1000 * (0.1 + 0.05))
    assert split.unsampled_us == pytest.approx(1000 * 0.05)
    assert sum(split.categories_us.values()) + split.unsampled_us == pytest.approx(1000)
    assert (split.samples, split.empty) == (406, 2)
    assert [t.tid for t in split.threads] == [1, 2, 3, 4]  # busiest first, idle left out
    assert split.threads[1].python_name == "Thread-1 (_poll_wrapper)"
    assert split.threads[3].categories is None


def test_without_per_thread_cpu_the_processes_samples_decide() -> None:
    profile = ProcessProfile(cpu_s=1.0, counts_by_thread={1: counts(rest=1), 2: counts(grpc=3)})
    split = split_process("gateway", 400.0, profile)
    assert split.categories_us[G] == pytest.approx(300.0)
    assert split.categories_us[R] == pytest.approx(100.0)
    assert split.unsampled_us == 0


def test_categories_add_up_to_the_measured_cpu_per_call() -> None:
    processes = {
        "gateway": ProcessProfile(0.5, {1: counts(grpc=2, rest=2)}, [ThreadCpu(1, "python", 0.5)]),
        "orders": ProcessProfile(1.5, {1: counts(storage=3, grpc=1)}, [ThreadCpu(1, "python", 1)]),
        "inventory": ProcessProfile(1.0, {}, [ThreadCpu(7, "python", 1.0)]),  # no samples
    }
    breakdown = cpu_breakdown("chain", "PlaceOrder", 9000.0, processes, 100)
    by_name = {p.process: p for p in breakdown.processes}
    # Processes by their share of the CPU: 0.5, 1.5 and 1.0 of 3 seconds.
    assert by_name["gateway"].cpu_us_per_call == pytest.approx(1500)
    assert by_name["orders"].cpu_us_per_call == pytest.approx(4500)
    assert by_name["inventory"].unsampled_us == pytest.approx(3000)
    total = breakdown.categories_us()
    assert total[S] == pytest.approx(4500 * 3 / 4)
    assert total[G] == pytest.approx(750 + 4500 / 4)
    assert sum(total.values()) + breakdown.unsampled_us == pytest.approx(9000)
    document = breakdown.to_json()
    assert document["per"] == "PlaceOrder"
    assert set(document["categories_us"]) == {c.value for c in Category}
    assert document["processes"]["gateway"]["categories_us"]["grpc"] == 750.0
    assert document["unsampled_us"] == 3000.0


def test_the_flame_graph_is_an_svg_with_a_box_per_frame() -> None:
    stacks = {
        ("thread (1): MainThread", "<module> (/s/shop/orders/__main__.py:1)",
         "execute (/v/sqlalchemy/engine/base.py:9)"): 3,
        ("thread (1): MainThread", "<module> (/s/shop/orders/__main__.py:1)"): 1,
        ("thread (2): Thread-1 (_poll_wrapper)",): 4,
    }  # fmt: skip
    svg = render_svg(stacks, "chain: orders <&>")
    root = ET.fromstring(svg)  # well-formed, names escaped
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("all (8 samples") for t in titles)
    assert any(t.startswith("<module> (/s/shop/orders/__main__.py:1) (4 samples") for t in titles)
    assert any(t.startswith("execute (/v/sqlalchemy/engine/base.py:9) (3 samples") for t in titles)
    assert len(titles) == 5  # all, two threads, <module>, execute
    assert "chain: orders &lt;&amp;&gt;" in svg
    ET.fromstring(render_svg({}, "nothing sampled"))  # still an SVG
