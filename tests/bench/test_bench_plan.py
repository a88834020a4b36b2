"""The pure parts of the benchmark: the interleaved plan, the selection, the ratios."""

from __future__ import annotations

import pytest

from shop.bench.configs import CONFIGS, select
from shop.bench.loadrun import LoadError, LoadResult, parse_summary
from shop.bench.results import ConfigResult, Sample, ratios
from shop.bench.runner import measurement_plan


def sample(key: str, round_number: int, calls_per_s: float, cpu_s: float | None) -> Sample:
    load = LoadResult(
        calls=int(calls_per_s * 5),
        calls_per_s=calls_per_s,
        p50_ms=10.0,
        p99_ms=20.0,
        errors=0,
        status_counts={"OK": int(calls_per_s * 5)},
    )
    return Sample(key, round_number, load, cpu_s, loaded_s=6.0)


def test_plan_interleaves_configurations_round_by_round() -> None:
    configs = select(["echo-bare", "chain"])
    plan = [(n, c.key) for n, c in measurement_plan(configs, 3)]
    assert plan == [
        (1, "echo-bare"), (1, "chain"), (2, "echo-bare"), (2, "chain"), (3, "echo-bare"),
        (3, "chain"),
    ]  # fmt: skip


def test_selection_keeps_the_canonical_order() -> None:
    assert [c.key for c in select(["chain", "echo-bare"])] == ["echo-bare", "chain"]
    assert select(None) == CONFIGS
    with pytest.raises(ValueError, match="unknown configuration"):
        select(["echo-bare", "nope"])


def test_ratios_divide_medians_and_skip_missing_pairs() -> None:
    bare, runtime = select(["echo-bare", "echo-runtime"])
    results = {
        "echo-bare": ConfigResult(
            bare, (sample("echo-bare", 1, 1000, 0.6), sample("echo-bare", 2, 3000, 0.6))
        ),
        # Median of 500, 800 and 5000 is 800, whatever the outlier.
        "echo-runtime": ConfigResult(
            runtime,
            tuple(sample("echo-runtime", i, r, None) for i, r in enumerate((500, 800, 5000), 1)),
        ),
    }
    (found,) = ratios(results)
    assert found.key == "echo_runtime_vs_bare"
    assert found.values["calls_per_s"] == pytest.approx(800 / 2000)
    assert found.values["p50_ms"] == pytest.approx(1.0)
    # CPU could not be read for the runtime: the ratio says so rather than guessing.
    assert found.values["server_cpu_us_per_call"] is None
    # 0.6 s of CPU over 6 s at 1000 calls/s: 100 us per call.
    assert results["echo-bare"].samples[0].server_cpu_us_per_call == pytest.approx(100.0)


def test_cpu_per_call_prefers_the_servers_own_count() -> None:
    counted = Sample("chain", 1, sample("chain", 1, 100, 1.2).load, 1.2, 6.0, handled_calls=800)
    # The server handled 800 calls (warm-up and the tail included), not 100/s x 6 s.
    assert counted.server_cpu_us_per_call == pytest.approx(1500.0)


def test_loader_output_is_parsed_or_rejected_with_a_reason() -> None:
    document = parse_summary(
        'note\n{"calls": 10, "calls_per_s": 5.0, "errors": 0, "status_counts": {"OK": 10},'
        ' "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}}\n'
    )
    assert LoadResult.from_json(document).p99_ms == 3.0
    with pytest.raises(LoadError, match="no JSON"):
        parse_summary("shop load: not available yet")
    with pytest.raises(LoadError, match="lacks a field"):
        LoadResult.from_json({"calls": 1})
