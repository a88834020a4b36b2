"""``shop bench`` end to end: one short run of every configuration, as a script sees it;
and the flags it refuses, each refusal naming the flag.

No speed is asserted (the machine is shared); the test checks that every
configuration was really measured (calls > 0, no errors), that tracing really
exported spans, and that every ratio is present.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shop.bench.configs import CONFIG_KEYS, DEFAULT_CHAIN_RATE, RATIOS, select
from shop.bench.loadrun import load_command
from shop.bench.runner import profiled
from shop.cli import bench as bench_cli
from shop.cli.main import build_parser, main

from .conftest import RunBench


def test_bench_measures_every_configuration_and_ratio(run_bench: RunBench) -> None:
    report = run_bench()
    assert set(report["configs"]) == set(CONFIG_KEYS)
    for key, result in report["configs"].items():
        assert result["calls"] > 0, key
        assert result["errors"] == 0, key
        assert result["calls_per_s"] > 0, key
        assert 0 < result["p50_ms"] <= result["p99_ms"], key
        if key == "echo-unsampled":
            assert result["spans"] == 0, result  # tracing on, the ratio at 0: none sampled
        elif result["tracing"]:
            assert result["spans"] > 0, key
        else:
            assert result["spans"] is None, key
        assert result["cpu_breakdown"] is None, key  # no --profile
        (measured,) = result["rounds"]
        if key in ("echo-bare", "chain-bare"):
            assert measured["handled_calls"] is None  # no metrics on the bare servers
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
    # The open loop: offered the default rate, judged by an objective; the closed
    # configurations have neither.
    fixed = report["configs"]["chain-fixed"]
    assert fixed["offered_calls_per_s"] == DEFAULT_CHAIN_RATE == report["settings"]["chain_rate"]
    assert 0 <= fixed["within_objective"] <= 1
    assert report["configs"]["chain"]["within_objective"] is None
    assert report["configs"]["chain"]["offered_calls_per_s"] is None
    # The PostgreSQL chain counts its database server's CPU with the services'; the
    # SQLite chain has no such process.
    (on_postgres,) = report["configs"]["chain-pg"]["rounds"]
    assert set(on_postgres["server_cpu_s_by_process"]) == {
        "gateway", "orders", "inventory", "postgres",
    }  # fmt: skip
    assert on_postgres["server_cpu_s_by_process"]["postgres"] > 0
    (on_sqlite,) = report["configs"]["chain"]["rounds"]
    assert set(on_sqlite["server_cpu_s_by_process"]) == {"gateway", "orders", "inventory"}
    # The bare chain: three servers, all of whose CPU counts, and each one worked (the
    # calls went through all three).
    (bare_chain,) = report["configs"]["chain-bare"]["rounds"]
    assert len(bare_chain["server_cpu_s_by_process"]) == 3
    assert all(s > 0 for s in bare_chain["server_cpu_s_by_process"].values()), bare_chain
    assert set(report["ratios"]) == {ratio.key for ratio in RATIOS}
    assert {"chain_vs_chain_bare", "chain_bare_vs_echo_bare"} <= set(report["ratios"])
    assert report["ratios"]["chain_vs_chain_bare"]["denominator"] == "chain-bare"
    for key, ratio in report["ratios"].items():
        assert ratio["calls_per_s"] > 0, key
    assert report["settings"]["concurrency"] == 64


def test_bench_only_runs_the_chosen_configurations(run_bench: RunBench) -> None:
    report = run_bench("--only", "echo-bare,echo-runtime", "--rounds", "2")
    assert list(report["configs"]) == ["echo-bare", "echo-runtime"]
    assert list(report["ratios"]) == ["echo_runtime_vs_bare"]
    assert [r["round"] for r in report["configs"]["echo-bare"]["rounds"]] == [1, 2]


def test_the_bare_chain_gets_the_echo_load_and_no_profile() -> None:
    args = build_parser(only="bench").parse_args(["bench", "--only", "chain-bare,echo-bare"])
    settings = bench_cli.settings_from_args(args)
    echo_bare, chain_bare = settings.configs
    assert settings.load_spec(chain_bare) == settings.load_spec(echo_bare)
    assert settings.load_spec(chain_bare).workload == "echo"
    assert not profiled(chain_bare)


def test_bench_rejects_an_unknown_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "echo-bare,nonsense"])
    assert exit_info.value.code == 2
    assert "unknown configuration nonsense" in capsys.readouterr().err


@pytest.mark.parametrize("rate", ["0", "-5", "0.5", "fast", "20000", "nan"])
def test_bench_rejects_a_bad_chain_rate(capsys: pytest.CaptureFixture[str], rate: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "chain-fixed", f"--chain-rate={rate}"])
    assert exit_info.value.code == 2
    assert "argument --chain-rate" in capsys.readouterr().err


def test_bench_rejects_a_bad_objective(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "chain-fixed", "--chain-objective-ms", "0"])
    assert exit_info.value.code == 2
    assert "argument --chain-objective-ms" in capsys.readouterr().err


def test_the_chain_rate_reaches_the_loader_as_an_open_loop() -> None:
    args = build_parser(only="bench").parse_args(
        ["bench", "--only", "chain,chain-fixed", "--chain-rate", "42.5",
         "--chain-objective-ms", "80"]
    )  # fmt: skip
    settings = bench_cli.settings_from_args(args)
    chain, fixed = select(["chain", "chain-fixed"])
    closed = load_command("ipv4:127.0.0.1:1", settings.load_spec(chain))
    assert "--concurrency" in closed and "--rps" not in closed
    opened = load_command("ipv4:127.0.0.1:1", settings.load_spec(fixed))
    assert "--concurrency" not in opened
    assert opened[opened.index("--rps") + 1] == "42.5"
    assert opened[opened.index("--objective-ms") + 1] == "80"
    assert settings.describe()["chain_rate"] == 42.5


def test_profile_needs_a_chain_configuration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "echo-bare", "--profile", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --profile" in capsys.readouterr().err


def test_profile_refuses_the_bare_chain_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "chain-bare", "--profile", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --profile" in err
    assert "chain-bare and chain-pg are not profiled" in err


def test_profile_needs_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "chain", "--profile", str(a_file)])
    assert exit_info.value.code == 2
    assert "argument --profile" in capsys.readouterr().err


def test_profile_without_py_spy_says_so_naming_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_cli, "find_py_spy", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--only", "chain", "--profile", str(tmp_path / "profile")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --profile" in err
    assert "py-spy" in err
    assert not (tmp_path / "profile").exists()  # refused before anything ran
