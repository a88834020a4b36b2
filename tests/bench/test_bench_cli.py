"""``shop bench`` end to end: one short run of every configuration, as a script sees it.

No speed is asserted (the machine is shared); the test checks that every
configuration was really measured (calls > 0, no errors), that tracing really
exported spans, and that every ratio is present.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shop.bench.configs import CONFIG_KEYS, RATIOS
from shop.cli.main import main

BENCH_TIMEOUT_S = 240


def run_bench_json(tmp_path: Path, *flags: str) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "shop.cli.main", "bench", "--duration", "1", "--warmup", "0.2",
        "--rounds", "1", "--json", "--no-progress", "--data-dir", str(tmp_path / "bench"), *flags,
    ]  # fmt: skip
    # Its own process group: if the test fails mid-run, the servers it started go too.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, stderr
    document: dict[str, Any] = json.loads(stdout)
    return document


def test_bench_measures_every_configuration_and_ratio(tmp_path: Path) -> None:
    report = run_bench_json(tmp_path)
    assert set(report["configs"]) == set(CONFIG_KEYS)
    for key, result in report["configs"].items():
        assert result["calls"] > 0, key
        assert result["errors"] == 0, key
        assert result["calls_per_s"] > 0, key
        assert 0 < result["p50_ms"] <= result["p99_ms"], key
        if result["tracing"]:
            assert result["spans"] > 0, key
        else:
            assert result["spans"] is None, key
        (measured,) = result["rounds"]
        if key == "echo-bare":
            assert measured["handled_calls"] is None  # no metrics on the bare server
        else:
            # The server's own count includes the warm-up, so it is never below the loader's.
            assert measured["handled_calls"] >= measured["calls"], key
    # The chart's sampling exports about one call in ten (never all of them).
    sampled = report["configs"]["echo-sampled"]
    assert 0 < sampled["spans"] < 0.3 * sampled["calls"], sampled
    # Every hop of the chain exported spans: tracing ran end to end.
    assert all(n > 0 for n in report["configs"]["chain-traced"]["spans_by_service"].values())
    assert set(report["configs"]["chain-traced"]["spans_by_service"]) == {
        "gateway", "orders", "inventory",
    }  # fmt: skip
    assert set(report["ratios"]) == {ratio.key for ratio in RATIOS}
    for key, ratio in report["ratios"].items():
        assert ratio["calls_per_s"] > 0, key
    assert report["settings"]["concurrency"] == 64


def test_bench_only_runs_the_chosen_configurations(tmp_path: Path) -> None:
    report = run_bench_json(tmp_path, "--only", "echo-bare,echo-runtime", "--rounds", "2")
    assert list(report["configs"]) == ["echo-bare", "echo-runtime"]
    assert list(report["ratios"]) == ["echo_runtime_vs_bare"]
    assert [r["round"] for r in report["configs"]["echo-bare"]["rounds"]] == [1, 2]


def test_bench_rejects_an_unknown_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "echo-bare,nonsense"])
    assert exit_info.value.code == 2
    assert "unknown configuration nonsense" in capsys.readouterr().err
