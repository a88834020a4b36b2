"""The escape hatches (scheduling, priority, pull secrets, pod labels and annotations,
extra environment) land on the pods they are meant for, and cannot undo what the
chart itself sets: selector labels, mesh labels and annotations, the services' own
environment.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest

from ..support.chart import ChartRenderer, Rendered

SERVICES = ("gateway", "orders", "inventory")


def _pods(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """component -> pod template (or the test Pod itself): metadata and spec."""
    pods: dict[str, dict[str, Any]] = {}
    for kind in ("Deployment", "StatefulSet"):
        for workload in rendered.of_kind(kind):
            template = workload["spec"]["template"]
            pods[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template
    for pod in rendered.of_kind("Pod"):
        pods[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = pod
    return pods


def _env(pod: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = pod["spec"]["containers"][0].get("env", [])
    return env


def test_every_pod_gets_the_release_wide_hatches(
    mode: str, render_chart: ChartRenderer, escape_hatches: dict[str, Any]
) -> None:
    pods = _pods(render_chart(mode, escape_hatches))
    assert set(pods) == {*SERVICES, "loadgen", "postgresql", "test"}
    for component, pod in pods.items():
        spec, meta = pod["spec"], pod["metadata"]
        assert spec["imagePullSecrets"] == [{"name": "registry-cred"}], component
        assert spec["priorityClassName"] == "shop-high", component
        assert meta["labels"]["team"] == "shop", component
        assert meta["annotations"]["example.com/cost-centre"] == "42", component


def test_a_workloads_own_values_override_the_release_wide_ones(
    mode: str, render_chart: ChartRenderer, escape_hatches: dict[str, Any]
) -> None:
    pods = _pods(render_chart(mode, escape_hatches))
    wide = escape_hatches
    orders = wide["orders"]
    # Scheduling: a workload's own non-empty value replaces the release-wide one.
    expected_nodes = {c: {"pool": "shop"} for c in pods} | {
        "orders": {"pool": "orders"},
        "loadgen": {"pool": "load"},
    }
    expected_tolerations = {c: wide["tolerations"] for c in pods} | {
        "orders": orders["tolerations"],
        "postgresql": wide["postgresql"]["tolerations"],
    }
    expected_affinity = {c: wide["affinity"] for c in pods} | {"orders": orders["affinity"]}
    for component, pod in pods.items():
        spec = pod["spec"]
        assert spec["nodeSelector"] == expected_nodes[component], component
        assert spec["tolerations"] == expected_tolerations[component], component
        assert spec["affinity"] == expected_affinity[component], component
    # Labels and annotations: merged, the service's own winning on the same key.
    labels = {c: pods[c]["metadata"]["labels"] for c in pods}
    annotations = {c: pods[c]["metadata"]["annotations"] for c in pods}
    assert labels["orders"]["tier"] == "core"
    assert annotations["orders"]["example.com/owner"] == "team-orders"
    for component in ("gateway", "inventory", "loadgen", "postgresql", "test"):
        assert labels[component]["tier"] == "backend", component
        assert annotations[component]["example.com/owner"] == "team-shop", component


def test_pod_labels_leave_selectors_and_chart_labels_alone(
    mode: str, render_chart: ChartRenderer, escape_hatches: dict[str, Any]
) -> None:
    plain, hatched = (
        render_chart(mode, {"loadgen": {"enabled": True}}),
        render_chart(mode, escape_hatches),
    )
    for kind in ("Deployment", "StatefulSet"):
        for workload in hatched.of_kind(kind):
            name = workload["metadata"]["name"]
            before = plain.get(kind, name)
            assert workload["spec"]["selector"] == before["spec"]["selector"], name
            template = workload["spec"]["template"]["metadata"]
            old = before["spec"]["template"]["metadata"]
            # Every label and annotation the chart sets is still there, with its value.
            assert old["labels"].items() <= template["labels"].items(), name
            assert old.get("annotations", {}).items() <= template["annotations"].items(), name
            added = set(template["labels"]) - set(old["labels"])
            assert added == {"team", "tier"}, name


def test_extra_env_follows_the_chart_env(
    mode: str, render_chart: ChartRenderer, escape_hatches: dict[str, Any]
) -> None:
    plain = _pods(render_chart(mode, {"loadgen": {"enabled": True}}))
    pods = _pods(render_chart(mode, escape_hatches))
    node_name = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    expected_extra = {
        "gateway": [{"name": "TZ", "value": "UTC"}, node_name],
        "inventory": [{"name": "TZ", "value": "UTC"}, node_name],
        # orders' own TZ replaces the release-wide one; its other entry is added.
        "orders": [
            node_name,
            {"name": "TZ", "value": "Europe/Berlin"},
            {"name": "OTEL_EXPORTER_OTLP_HEADERS", "value": "x-tenant=shop"},
        ],
    }
    for component in SERVICES:
        chart_env = _env(plain[component])
        env = _env(pods[component])
        # The chart's own entries come first and unchanged; no name appears twice.
        assert env[: len(chart_env)] == chart_env, component
        assert env[len(chart_env) :] == expected_extra[component], component
        names = [e["name"] for e in env]
        assert len(names) == len(set(names)), component
    # Release-wide extraEnv is for the services; the other containers keep theirs.
    for component in ("loadgen", "postgresql", "test"):
        assert _env(pods[component]) == _env(plain[component]), component


def test_no_hatch_means_no_field(render_chart: ChartRenderer) -> None:
    # The defaults add nothing: no empty nodeSelector, tolerations, or priority.
    for component, pod in _pods(render_chart("istio", {"loadgen": {"enabled": True}})).items():
        for field in (
            "nodeSelector",
            "tolerations",
            "affinity",
            "priorityClassName",
            "imagePullSecrets",
        ):
            assert field not in pod["spec"], (component, field)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # The services' settings: each follows a value of the chart.
        (
            {"extraEnv": [{"name": "SHOP_LOG_LEVEL", "value": "debug"}]},
            "extraEnv: SHOP_LOG_LEVEL is a setting of the shop services, which the chart sets "
            "from its values; set the chart's value instead",
        ),
        # A SHOP_* name the chart does not set today is refused too (the chart wires
        # every setting the services read).
        (
            {"gateway": {"extraEnv": [{"name": "SHOP_NEW_SETTING", "value": "1"}]}},
            "gateway.extraEnv: SHOP_NEW_SETTING is a setting of the shop services",
        ),
        (
            {"orders": {"extraEnv": [{"name": "DATABASE_URL", "value": "postgresql://x"}]}},
            "orders.extraEnv: DATABASE_URL is set by the chart in the orders container and "
            "cannot be overridden",
        ),
        (
            {"extraEnv": [{"name": "OTEL_TRACES_EXPORTER", "value": "otlp"}]},
            "extraEnv: OTEL_TRACES_EXPORTER is set by the chart in the gateway container",
        ),
        (
            {"inventory": {"extraEnv": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
            "inventory.extraEnv: A is listed twice",
        ),
        (
            {"podLabels": {"app.kubernetes.io/component": "api"}},
            'podLabels: "app.kubernetes.io/component" is a selector label of the chart',
        ),
        (
            {"orders": {"podLabels": {"app.kubernetes.io/instance": "other"}}},
            'orders.podLabels: "app.kubernetes.io/instance" is a selector label of the chart; '
            "a different value would detach the orders pods",
        ),
        (
            {"gateway": {"podLabels": {"sidecar.istio.io/inject": "true"}}},
            'gateway.podLabels: "sidecar.istio.io/inject" is set by the chart on the gateway '
            'pods (to "false") and cannot be overridden',
        ),
        (
            {"podAnnotations": {"helm.sh/hook": "post-install"}},
            'podAnnotations: "helm.sh/hook" is set by the chart on the test pods',
        ),
        (
            {"inventory": {"podAnnotations": {"prometheus.io/port": "1"}}},
            'inventory.podAnnotations: "prometheus.io/port" is set by the chart on the '
            'inventory pods (to "9464")',
        ),
    ],
)
def test_what_the_chart_sets_cannot_be_overridden(
    values: dict[str, Any], message: str, render_chart: ChartRenderer
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render_chart("clusterip", values)


def test_chart_annotations_depend_on_the_mode(render_chart: ChartRenderer) -> None:
    # A key is refused where the chart sets it, and free where it does not.
    values = {"podAnnotations": {"inject.istio.io/templates": "sidecar"}}
    render_chart("istio", values)
    with pytest.raises(helm_python.HelmRenderError, match=re.escape("inject.istio.io/templates")):
        render_chart("proxyless", values)
