"""Load-aware balancing and outlier detection in mode=headless, and the servers' ORCA
load reports in every mode: which values become which SHOP_* variables, and which don't.

headless.loadBalancingPolicy weighted_round_robin (gRFC A58) weighs pods by the ORCA
reports every server attaches to its answers (orcaReports); headless.outlierDetection
wraps the client policy in gRPC's failure-percentage ejection (gRFC A50). Both are
client settings of mode=headless only: the other modes render exactly as before.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import helm_python
import pytest

from ..support.chart import ChartRenderer, EnvOf, Rendered

SERVICES = ("gateway", "orders", "inventory")
OTHER_MODES = ("clusterip", "istio", "proxyless")
WRR_NAMES = {"SHOP_WRR_BLACKOUT_S", "SHOP_WRR_ERROR_PENALTY"}
OUTLIER_NAMES = {
    "SHOP_OUTLIER_DETECTION",
    "SHOP_OUTLIER_INTERVAL_S",
    "SHOP_OUTLIER_BASE_EJECTION_S",
    "SHOP_OUTLIER_MAX_EJECTION_PERCENT",
    "SHOP_OUTLIER_FAILURE_PERCENT",
    "SHOP_OUTLIER_MIN_HOSTS",
    "SHOP_OUTLIER_REQUEST_VOLUME",
}
# None of these is a chart default (nor the runtime's), so each must come from the values.
WRR: dict[str, Any] = {
    "loadBalancingPolicy": "weighted_round_robin",
    "weightedRoundRobin": {"blackoutPeriodSeconds": 2.5, "errorUtilizationPenalty": 0.25},
}
OUTLIERS: dict[str, Any] = {
    "enabled": True,
    "intervalSeconds": 5,
    "baseEjectionTimeSeconds": 15.5,
    "maxEjectionPercent": 34,
    "failurePercentageThreshold": 60,
    "minimumHosts": 3,
    "requestVolume": 40,
}
EVERYTHING_ON: dict[str, Any] = {"headless": {**WRR, "outlierDetection": OUTLIERS}}


def _envs(rendered: Rendered, env_of: EnvOf) -> dict[str, dict[str, Any]]:
    """service -> its container's environment."""
    return {s: env_of(rendered.get("Deployment", f"shop-{s}")) for s in SERVICES}


def _fixed_part(rendered: Rendered) -> list[dict[str, Any]]:
    """The render's objects, less the data of the Secrets the chart generates (a demo
    issuer and internal keys, random in each render)."""
    return [
        {k: v for k, v in obj.items() if not (obj["kind"] == "Secret" and k == "data")}
        for obj in rendered.manifests()
    ]


def _balancing(env: dict[str, Any]) -> set[str]:
    return {name for name in env if name.startswith(("SHOP_WRR_", "SHOP_OUTLIER_"))}


def test_defaults_set_neither_in_any_mode(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    for service, env in _envs(render_chart(mode), env_of).items():
        assert _balancing(env) == set(), (mode, service)
        # Every server reports its load, whatever balances the calls to it.
        assert env["SHOP_ORCA_REPORTS"] == "true", (mode, service)
    if mode == "headless":
        assert {env["SHOP_LB_POLICY"] for env in _envs(render_chart(mode), env_of).values()} == {
            "round_robin"
        }


def test_headless_weighted_round_robin(render_chart: ChartRenderer, env_of: EnvOf) -> None:
    for service, env in _envs(render_chart("headless", {"headless": WRR}), env_of).items():
        assert env["SHOP_LB_POLICY"] == "weighted_round_robin", service
        assert env["SHOP_WRR_BLACKOUT_S"] == "2.5", service
        assert env["SHOP_WRR_ERROR_PENALTY"] == "0.25", service
        assert _balancing(env) == WRR_NAMES, service  # no outlier detection unless enabled


def test_weighted_round_robin_settings_alone_change_nothing(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    # The WRR numbers are read only with the WRR policy: round_robin ignores them.
    values = {"headless": {"weightedRoundRobin": WRR["weightedRoundRobin"]}}
    for service, env in _envs(render_chart("headless", values), env_of).items():
        assert env["SHOP_LB_POLICY"] == "round_robin", service
        assert _balancing(env) == set(), service


def test_headless_outlier_detection(render_chart: ChartRenderer, env_of: EnvOf) -> None:
    rendered = render_chart("headless", {"headless": {"outlierDetection": OUTLIERS}})
    for service, env in _envs(rendered, env_of).items():
        assert {name: env[name] for name in _balancing(env)} == {
            "SHOP_OUTLIER_DETECTION": "true",
            "SHOP_OUTLIER_INTERVAL_S": "5",
            "SHOP_OUTLIER_BASE_EJECTION_S": "15.5",
            "SHOP_OUTLIER_MAX_EJECTION_PERCENT": "34",
            "SHOP_OUTLIER_FAILURE_PERCENT": "60",
            "SHOP_OUTLIER_MIN_HOSTS": "3",
            "SHOP_OUTLIER_REQUEST_VOLUME": "40",
        }, service
        # Outlier detection wraps whichever policy is chosen; it does not choose one.
        assert env["SHOP_LB_POLICY"] == "round_robin", service


def test_outlier_settings_without_enabled_change_nothing(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    values = {"headless": {"outlierDetection": {**OUTLIERS, "enabled": False}}}
    for service, env in _envs(render_chart("headless", values), env_of).items():
        assert _balancing(env) == set(), service


def test_both_together(render_chart: ChartRenderer, env_of: EnvOf) -> None:
    for service, env in _envs(render_chart("headless", EVERYTHING_ON), env_of).items():
        assert _balancing(env) == WRR_NAMES | OUTLIER_NAMES, service
        assert env["SHOP_LB_POLICY"] == "weighted_round_robin", service
        assert env["SHOP_OUTLIER_FAILURE_PERCENT"] == "60", service


def test_boundary_values_pass_the_schema_and_render(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    # The schema's bounds are the runtime's: 0 and 100 are percentages it accepts,
    # a blackout or penalty of 0 switches that part off, one pod is a minimum.
    values = {
        "headless": {
            "loadBalancingPolicy": "weighted_round_robin",
            "weightedRoundRobin": {"blackoutPeriodSeconds": 0, "errorUtilizationPenalty": 0},
            "outlierDetection": {
                "enabled": True,
                "maxEjectionPercent": 100,
                "failurePercentageThreshold": 0,
                "minimumHosts": 1,
                "requestVolume": 1,
                "intervalSeconds": 0.5,
            },
        }
    }
    env = env_of(render_chart("headless", values).get("Deployment", "shop-orders"))
    assert env["SHOP_WRR_BLACKOUT_S"] == "0"
    assert env["SHOP_WRR_ERROR_PENALTY"] == "0"
    assert env["SHOP_OUTLIER_MAX_EJECTION_PERCENT"] == "100"
    assert env["SHOP_OUTLIER_FAILURE_PERCENT"] == "0"
    assert env["SHOP_OUTLIER_MIN_HOSTS"] == "1"
    assert env["SHOP_OUTLIER_REQUEST_VOLUME"] == "1"
    assert env["SHOP_OUTLIER_INTERVAL_S"] == "0.5"


@pytest.mark.parametrize("mode", OTHER_MODES)
def test_other_modes_render_exactly_as_without_them(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    # headless.* is ignored outside mode=headless: the render does not change (but for
    # the keys the chart generates anew in each render).
    plain = render_chart(mode)
    with_balancing = render_chart(mode, EVERYTHING_ON)
    assert _fixed_part(with_balancing) == _fixed_part(plain)
    assert with_balancing.notes == plain.notes
    for service, env in _envs(with_balancing, env_of).items():
        assert _balancing(env) == set(), service
        assert env["SHOP_LB_POLICY"] != "weighted_round_robin", service


def test_orca_reports_off_in_every_mode(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    for service, env in _envs(render_chart(mode, {"orcaReports": False}), env_of).items():
        assert env["SHOP_ORCA_REPORTS"] == "false", (mode, service)


def test_default_outlier_settings_can_eject_in_the_default_services(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    # gRPC's own minimumHosts (5) would never judge a Service of the chart's size; the
    # chart's defaults must let outlier detection act on orders and inventory as shipped.
    rendered = render_chart("headless", {"headless": {"outlierDetection": {"enabled": True}}})
    env = env_of(rendered.get("Deployment", "shop-gateway"))
    assert env["SHOP_OUTLIER_DETECTION"] == "true"
    min_hosts = int(env["SHOP_OUTLIER_MIN_HOSTS"])
    for callee in ("orders", "inventory"):
        replicas = rendered.get("Deployment", f"shop-{callee}")["spec"]["replicas"]
        assert min_hosts <= replicas, callee
    # gRPC ejects the first outlier whatever the percentage, a second one while fewer
    # than maxEjectionPercent are out: never all of a Service.
    assert 0 < int(env["SHOP_OUTLIER_MAX_EJECTION_PERCENT"]) < 100
    assert 0 < int(env["SHOP_OUTLIER_FAILURE_PERCENT"]) < 100


def test_rendered_values_are_what_the_runtime_accepts(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    # Each variable parsed by the runtime's own setting of that name (the contract).
    from shop.cli.env import every_setting

    settings = {s.name: s for s in every_setting()}
    env = env_of(render_chart("headless", EVERYTHING_ON).get("Deployment", "shop-gateway"))
    read = {name: settings[name].read(env) for name in [*sorted(_balancing(env)), "SHOP_LB_POLICY"]}
    assert read["SHOP_LB_POLICY"] == "weighted_round_robin"
    assert read["SHOP_WRR_BLACKOUT_S"] == 2.5
    assert read["SHOP_OUTLIER_DETECTION"] is True
    assert read["SHOP_OUTLIER_BASE_EJECTION_S"] == 15.5
    assert read["SHOP_OUTLIER_REQUEST_VOLUME"] == 40
    assert settings["SHOP_ORCA_REPORTS"].read({"SHOP_ORCA_REPORTS": env["SHOP_ORCA_REPORTS"]})
    # Where the chart sets none of them, the runtime's defaults mean off.
    assert settings["SHOP_OUTLIER_DETECTION"].read({}) is False


def test_load_generator_keeps_a_policy_shop_load_takes(render_chart: ChartRenderer) -> None:
    # The load generator calls the gateway with the mode's policy: weighted_round_robin
    # is the services' setting, and `shop load --lb-policy` must still parse.
    from shop.cli.main import build_parser

    rendered = render_chart("headless", {**EVERYTHING_ON, "loadgen": {"enabled": True}})
    loadgen = rendered.get("Deployment", "shop-loadgen")
    words = shlex.split(loadgen["spec"]["template"]["spec"]["containers"][0]["args"][0])
    args = build_parser().parse_args(words[words.index("shop") + 1 : words.index("||")])
    assert args.lb_policy == "round_robin"


def test_notes_name_the_headless_policy(render_chart: ChartRenderer) -> None:
    assert "round_robin clients" in render_chart("headless").notes
    assert "Outlier detection" not in render_chart("headless").notes
    notes = render_chart("headless", EVERYTHING_ON).notes
    assert "weighted_round_robin clients" in notes
    assert "more than 60% failed calls in 5s" in notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"headless": {"loadBalancingPolicy": "least_request"}},
            "at '/headless/loadBalancingPolicy': value must be one of 'round_robin', "
            "'weighted_round_robin'",
        ),
        # pick_first in headless mode would undo what the mode is for.
        ({"headless": {"loadBalancingPolicy": "pick_first"}}, "at '/headless/loadBalancingPolicy'"),
        (
            {"headless": {"weightedRoundRobin": {"blackoutPeriodSeconds": -1}}},
            "at '/headless/weightedRoundRobin/blackoutPeriodSeconds': minimum: got -1, want 0",
        ),
        (
            {"headless": {"weightedRoundRobin": {"errorUtilizationPenalty": -0.5}}},
            "at '/headless/weightedRoundRobin/errorUtilizationPenalty': minimum",
        ),
        (
            {"headless": {"weightedRoundRobin": {"blackoutPeriod": 10}}},
            "at '/headless/weightedRoundRobin': additional properties 'blackoutPeriod' not allowed",
        ),
        (
            {"headless": {"outlierDetection": {"maxEjectionPercent": 150}}},
            "at '/headless/outlierDetection/maxEjectionPercent': maximum: got 150, want 100",
        ),
        (
            {"headless": {"outlierDetection": {"maxEjectionPercent": 12.5}}},
            "at '/headless/outlierDetection/maxEjectionPercent': got number, want integer",
        ),
        (
            {"headless": {"outlierDetection": {"failurePercentageThreshold": 101}}},
            "at '/headless/outlierDetection/failurePercentageThreshold': maximum",
        ),
        (
            {"headless": {"outlierDetection": {"failurePercentageThreshold": -1}}},
            "at '/headless/outlierDetection/failurePercentageThreshold': minimum",
        ),
        (
            {"headless": {"outlierDetection": {"intervalSeconds": 0}}},
            "at '/headless/outlierDetection/intervalSeconds': exclusiveMinimum: got 0, want 0",
        ),
        (
            {"headless": {"outlierDetection": {"baseEjectionTimeSeconds": 0}}},
            "at '/headless/outlierDetection/baseEjectionTimeSeconds': exclusiveMinimum",
        ),
        (
            {"headless": {"outlierDetection": {"minimumHosts": 0}}},
            "at '/headless/outlierDetection/minimumHosts': minimum: got 0, want 1",
        ),
        (
            {"headless": {"outlierDetection": {"requestVolume": 0}}},
            "at '/headless/outlierDetection/requestVolume': minimum: got 0, want 1",
        ),
        (
            {"headless": {"outlierDetection": {"enabled": "yes"}}},
            "at '/headless/outlierDetection/enabled': got string, want boolean",
        ),
        (
            {"headless": {"outlierDetection": {"treshold": 50}}},
            "at '/headless/outlierDetection': additional properties 'treshold' not allowed",
        ),
        ({"orcaReports": "false"}, "at '/orcaReports': got string, want boolean"),
    ],
)
def test_wrong_values_name_the_field(
    values: dict[str, Any], message: str, render_chart: ChartRenderer
) -> None:
    # Refused in any mode, as every other value is: the schema does not look at the mode.
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render_chart("clusterip", values)


def test_weighted_round_robin_needs_load_reports(render_chart: ChartRenderer) -> None:
    # Without ORCA reports every pod weighs the same: round_robin under another name.
    values = {"headless": {"loadBalancingPolicy": "weighted_round_robin"}, "orcaReports": False}
    with pytest.raises(helm_python.HelmValuesError, match=re.escape("at '/orcaReports'")):
        render_chart("headless", values)
    # Refused for the combination, not a part: each alone is fine, and so is the pair
    # where headless.* is not in use.
    render_chart("headless", {"orcaReports": False})
    render_chart("headless", {"headless": {"loadBalancingPolicy": "weighted_round_robin"}})
    render_chart("clusterip", values)
