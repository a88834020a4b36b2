"""``shop bench --profile``: py-spy on every chain process, a flame graph each, and the
chain's CPU per call split by category, adding up to the CPU measured; and a py-spy
that cannot attach stops the run with an error naming the flag."""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shop.bench.profile import ProfileError, Profiler, check_attach, find_py_spy
from shop.bench.stacks import Category

from .conftest import RunBench

CHAIN = ("gateway", "orders", "inventory")


def fake_py_spy(tmp_path: Path, script: str) -> str:
    path = tmp_path / "py-spy"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_py_spy_that_cannot_attach_is_an_error_naming_the_flag(tmp_path: Path) -> None:
    refusing = fake_py_spy(
        tmp_path,
        'echo "Permission Denied: Try running again with elevated permissions" >&2\nexit 1',
    )
    with pytest.raises(ProfileError, match=r"--profile: py-spy cannot attach to orders") as error:
        check_attach(refusing, {"orders": os.getpid()})
    assert "Permission Denied" in str(error.value)


def test_a_recording_that_dies_at_once_is_an_error_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    dying = fake_py_spy(tmp_path, 'echo "Error: Failed to find python version" >&2\nexit 1')
    profiler = Profiler(tmp_path / "profile", dying)
    with (
        pytest.raises(ProfileError, match=r"--profile: py-spy could not attach to gateway"),
        profiler.recording("chain", 1, {"gateway": os.getpid()}),
    ):
        pytest.fail("the block must not run without a sampler")
    assert (
        "Failed to find python version"
        in (tmp_path / "profile" / "raw" / "chain-r1-gateway.log").read_text()
    )


@pytest.mark.skipif(find_py_spy() is None, reason="py-spy is not installed")
def test_profile_writes_flame_graphs_and_a_breakdown_that_adds_up(
    run_bench: RunBench, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    # Enough calls for py-spy (100 Hz) to catch inventory in its storage: a Reserve
    # costs it about 0.1-0.15 ms of CPU there, so 750 calls give about ten samples
    # (a 2 s run at 60 calls/s gave one or two, and sometimes none).
    report = run_bench(
        "--only", "chain-fixed", "--chain-rate", "150", "--duration", "5", "--profile", str(profile)
    )  # fmt: skip
    fixed = report["configs"]["chain-fixed"]
    assert fixed["calls"] > 0
    assert 0 < fixed["p50_ms"] <= fixed["p99_ms"]
    assert fixed["offered_calls_per_s"] == 150
    assert fixed["within_objective"] is not None
    assert report["settings"]["profile_dir"] == str(profile)

    breakdown = fixed["cpu_breakdown"]
    assert breakdown["per"] == "PlaceOrder"
    # The total is the table's CPU per call; processes, and categories, add up to it.
    assert breakdown["cpu_us_per_call"] == pytest.approx(fixed["server_cpu_us_per_call"], abs=0.1)
    processes = breakdown["processes"]
    assert set(processes) == set(CHAIN)
    assert sum(p["cpu_us_per_call"] for p in processes.values()) == pytest.approx(
        breakdown["cpu_us_per_call"], abs=0.5
    )
    for name, process in processes.items():
        parts = sum(process["categories_us"].values()) + process["unsampled_us"]
        # Seven figures rounded to 0.1 us each.
        assert parts == pytest.approx(process["cpu_us_per_call"], abs=0.4), name
        assert process["samples"] > 0, name
        assert set(process["categories_us"]) == {c.value for c in Category}, name
        svg = Path(process["flame_graph"])
        assert svg == profile / f"chain-fixed-{name}.svg"
        ET.parse(svg)  # a well-formed SVG
        assert (profile / "raw" / f"chain-fixed-r1-{name}.txt").stat().st_size > 0
    total = sum(breakdown["categories_us"].values()) + breakdown["unsampled_us"]
    assert total == pytest.approx(breakdown["cpu_us_per_call"], abs=0.4)
    # The categories say something real: the stateful services store, the hops call
    # each other over gRPC (inventory calls no one: in a short run it may show none).
    for name in ("orders", "inventory"):
        assert processes[name]["categories_us"]["storage"] > 0, name
    assert breakdown["categories_us"]["grpc"] > 0
    # The report is kept beside the graphs, for a before/after comparison.
    assert (profile / "bench.json").exists()
