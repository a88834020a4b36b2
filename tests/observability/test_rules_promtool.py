"""The chart's Prometheus rules pass ``promtool``, and their unit tests cover them.

``promtool check rules`` validates the rule file; ``promtool test rules`` runs the
scenario tests next to it (balanced round robin, a ClusterIP-pinned client, a
starved new pod, error bursts, a slow pod). A broken copy of either file must make
promtool fail, so a green run means something. Structural checks keep every rule
readable and every alert actionable.

promtool comes with the Debian package ``prometheus`` (``make sysdeps``); when it
is missing these tests fail rather than skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support.paths import REPO, RULES_DIR

RULE_FILE = RULES_DIR / "grpc-shop.rules.yaml"
TEST_FILE = RULES_DIR / "tests" / "grpc-shop.rules.test.yaml"

# level:metric:operations (https://prometheus.io/docs/practices/rules/)
RECORD_NAME = re.compile(r"^[a-z][a-z_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
# Calls that are not application traffic, excluded wherever calls are counted.
NOT_TRAFFIC = r"grpc_service!~`grpc\.health\.v1\.Health|grpc\.reflection\..+`"
SERVER_SERIES = re.compile(r"grpc_server_(?:handled_total|handling_seconds_bucket)\{([^}]*)\}")
SEVERITIES = {"critical", "warning", "info"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: install the Debian package `prometheus` "
            "(`make sysdeps` does it as root); the rule tests cannot run without it",
            pytrace=False,
        )
    return path


def _run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULE_FILE.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _records() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "record" in rule]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _test_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(TEST_FILE.read_text())["tests"]
    return groups


# --- promtool on the real files -------------------------------------------------------


def test_promtool_check_rules_accepts_the_rule_file() -> None:
    result = _run("check", "rules", RULE_FILE.relative_to(REPO))
    assert result.returncode == 0, _output(result)
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout, _output(result)


def test_promtool_unit_tests_pass() -> None:
    result = _run("test", "rules", TEST_FILE.relative_to(REPO))
    assert result.returncode == 0, _output(result)
    assert "SUCCESS" in result.stdout, _output(result)


# --- the checks can fail ----------------------------------------------------------------


def _copy_rules(tmp_path: Path) -> tuple[Path, Path]:
    """The rule file and its tests in the same relative layout (the test file names
    its rule file as ``../grpc-shop.rules.yaml``)."""
    (tmp_path / "tests").mkdir()
    rule_copy = tmp_path / RULE_FILE.name
    test_copy = tmp_path / "tests" / TEST_FILE.name
    shutil.copy(RULE_FILE, rule_copy)
    shutil.copy(TEST_FILE, test_copy)
    return rule_copy, test_copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))


def _raise_imbalance_threshold(rules: Path, tests: Path) -> None:
    # A pinned client (imbalance 3) no longer alerts: the ClusterIP scenario must fail.
    _edit(
        rules,
        "service:grpc_server_imbalance:ratio1m > 1.5",
        "service:grpc_server_imbalance:ratio1m > 5",
    )


def _count_health_checks_as_traffic(rules: Path, tests: Path) -> None:
    # Shares and imbalance would move with health-check traffic.
    text = rules.read_text()
    assert NOT_TRAFFIC in text
    rules.write_text(text.replace(NOT_TRAFFIC, r"grpc_service!~`grpc\.reflection\..+`"))


def _drop_an_expected_firing(rules: Path, tests: Path) -> None:
    # The starved new pod's alert is expected to fire: claim it does not.
    text = tests.read_text()
    start = text.index("  - name: C ")
    firing = text.index("        exp_alerts:", start)
    end = text.index("      - alertname: GrpcShopImbalance", firing)
    tests.write_text(text[:firing] + text[end:])


@pytest.mark.parametrize(
    "breakage",
    [_raise_imbalance_threshold, _count_health_checks_as_traffic, _drop_an_expected_firing],
    ids=lambda breakage: breakage.__name__.strip("_"),
)
def test_promtool_unit_tests_fail_on_a_broken_copy(
    tmp_path: Path, breakage: Callable[[Path, Path], None]
) -> None:
    rules, tests = _copy_rules(tmp_path)
    unchanged = _run("test", "rules", tests, cwd=tmp_path)
    assert unchanged.returncode == 0, _output(unchanged)
    breakage(rules, tests)
    broken = _run("test", "rules", tests, cwd=tmp_path)
    assert broken.returncode != 0, _output(broken)
    assert "FAILED" in broken.stdout + broken.stderr, _output(broken)


def test_promtool_check_rules_fails_on_a_bad_expression(tmp_path: Path) -> None:
    rules, _ = _copy_rules(tmp_path)
    _edit(
        rules,
        "service_pod:grpc_server_handled:rate1m == 0",
        "service_pod:grpc_server_handled:rate1m == == 0",
    )
    result = _run("check", "rules", rules)
    assert result.returncode != 0, _output(result)
    assert "GrpcShopPodStarved" in result.stdout + result.stderr or "parse error" in (
        result.stdout + result.stderr
    ), _output(result)


# --- structure ------------------------------------------------------------------------------


def test_recording_rule_names_follow_level_metric_operations() -> None:
    records = _records()
    assert records
    for rule in records:
        name = rule["record"]
        assert RECORD_NAME.match(name), f"{name}: not level:metric:operations"
        level, metric, _ = name.split(":")
        # The aggregation level names what the series is kept by.
        assert set(level.split("_")) <= {"service", "pod", "method"}, name
        assert not metric.endswith("_total"), f"{name}: drop _total once a rate is taken"
    names = [rule["record"] for rule in records]
    assert len(names) == len(set(names)), "a recording rule name is defined twice"


def test_recording_rules_keep_mode_so_modes_compare() -> None:
    """Every aggregation keeps ``mode`` and every match between recorded series
    matches on it (joins to shop_instance_info match on ``instance`` alone)."""
    for rule in _records():
        groupings = re.findall(r"\b(by|on) \(([^)]*)\)", rule["expr"])
        assert groupings, f"{rule['record']}: neither aggregates nor matches"
        for keyword, grouping in groupings:
            labels = {label.strip() for label in grouping.split(",")}
            if keyword == "on" and labels == {"instance"}:
                continue
            assert "mode" in labels, f"{rule['record']}: `{keyword} ({grouping})` drops mode"


def test_every_alert_has_severity_summary_and_description() -> None:
    alerts = _alerts()
    assert {rule["alert"] for rule in alerts} == {
        "GrpcShopImbalance",
        "GrpcShopPodStarved",
        "GrpcShopErrorBudgetBurn",
        "GrpcShopLatencyP99High",
    }
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            assert annotations.get(key, "").strip(), f"{name}: no {key} annotation"
        assert len(annotations["description"]) > len(annotations["summary"]), name
        assert rule.get("for"), f"{name}: fires on one evaluation; give it a `for`"


def test_traffic_figures_exclude_health_and_reflection() -> None:
    for rule in _rules():
        for matchers in SERVER_SERIES.findall(rule["expr"]):
            assert NOT_TRAFFIC in matchers, (
                f"{rule.get('record') or rule.get('alert')}: {{{matchers}}} counts health "
                "checks or reflection as traffic"
            )


def test_error_ratio_counts_server_codes_in_both_spellings() -> None:
    server_trouble = {
        "UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
        "RESOURCE_EXHAUSTED", "DATA_LOSS",
    }  # fmt: skip
    client_side = {"OK", "CANCELLED", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS",
                   "PERMISSION_DENIED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                   "UNAUTHENTICATED"}  # fmt: skip

    def camel(code: str) -> str:
        return "".join(part.capitalize() for part in code.split("_"))

    error_rules = [r for r in _records() if ":grpc_server_error:" in r["record"]]
    assert error_rules
    for rule in error_rules:
        (codes,) = set(re.findall(r"grpc_code=~`([^`]*)`", rule["expr"]))
        listed = set(codes.split("|"))
        expected = server_trouble | {camel(code) for code in server_trouble}
        assert listed == expected, rule["record"]
        assert not listed & (client_side | {camel(code) for code in client_side})


# --- the unit tests cover every rule ---------------------------------------------------


def test_every_recording_rule_has_a_value_test() -> None:
    tested = {
        re.match(r"[\w:]+", case["expr"]).group(0)  # type: ignore[union-attr]
        for group in _test_groups()
        for case in group.get("promql_expr_test", [])
    }
    missing = [rule["record"] for rule in _records() if rule["record"] not in tested]
    assert missing == [], f"recording rules without a promql_expr_test: {missing}"


def test_every_alert_fires_in_a_scenario_and_stays_quiet_when_healthy() -> None:
    groups = _test_groups()
    healthy = next(group for group in groups if "healthy" in group["name"])
    quiet_when_healthy = {
        case["alertname"]
        for case in healthy.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    fires = {
        case["alertname"]
        for group in groups
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in _alerts()}
    assert names - fires == set(), f"alerts never shown firing: {names - fires}"
    assert names - quiet_when_healthy == set(), (
        f"alerts not shown quiet in the healthy scenario: {names - quiet_when_healthy}"
    )
    # Both burn-rate windows are exercised.
    burns = {
        alert["exp_labels"]["burn"]
        for group in groups
        for case in group.get("alert_rule_test", [])
        if case["alertname"] == "GrpcShopErrorBudgetBurn"
        for alert in case.get("exp_alerts") or []
    }
    assert burns == {"fast", "slow"}
