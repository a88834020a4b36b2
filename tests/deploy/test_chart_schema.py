"""values.schema.json turns bad values into a message naming the field, before rendering."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest

from ..support.chart import ChartRenderer


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"mode": "roundrobin"},
            "at '/mode': value must be one of 'clusterip', 'headless', 'istio', 'proxyless'",
        ),
        ({"orders": {"replica": 3}}, "at '/orders': additional properties 'replica' not allowed"),
        ({"ordrs": {"replicas": 3}}, "additional properties 'ordrs' not allowed"),
        ({"orders": {"replicas": "three"}}, "at '/orders/replicas': got string, want integer"),
        ({"orders": {"replicas": 0}}, "at '/orders/replicas': minimum: got 0, want 1"),
        ({"grpcPort": 70000}, "at '/grpcPort': maximum: got 70,000, want 65,535"),
        ({"client": {"retryMaxAttempts": 6}}, "at '/client/retryMaxAttempts': maximum"),
        ({"logLevel": "verbose"}, "at '/logLevel': value must be one of"),
        ({"istio": {"loadBalancer": "LEAST_CONN"}}, "at '/istio/loadBalancer'"),
        ({"istio": {"warmupDuration": "30"}}, "at '/istio/warmupDuration'"),
        ({"otel": {"endpoint": "collector:4317"}}, "at '/otel/endpoint'"),
        ({"otel": {"samplerArg": "1.5"}}, "at '/otel/samplerArg'"),
        ({"postgresql": {"storage": "1GB"}}, "at '/postgresql/storage'"),
        # The escape hatches: misspelt keys at every level, wrong types.
        ({"nodeSelecter": {"pool": "a"}}, "additional properties 'nodeSelecter' not allowed"),
        (
            {"gateway": {"tolerration": []}},
            "at '/gateway': additional properties 'tolerration' not allowed",
        ),
        (
            {"affinity": {"nodeAfinity": {}}},
            "at '/affinity': additional properties 'nodeAfinity' not allowed",
        ),
        (
            {
                "orders": {
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {"weight": 50, "podAffinityTerm": {"topologykey": "zone"}}
                            ]
                        }
                    }
                }
            },
            "at '/orders/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution"
            "/0/podAffinityTerm': additional properties 'topologykey' not allowed",
        ),
        (
            {"tolerations": [{"key": "gpu", "efect": "NoSchedule"}]},
            "at '/tolerations/0': additional properties 'efect' not allowed",
        ),
        ({"tolerations": [{"operator": "Exist"}]}, "at '/tolerations/0/operator'"),
        ({"inventory": {"extraEnv": [{"nmae": "A"}]}}, "at '/inventory/extraEnv/0'"),
        (
            {"extraEnv": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "ky": "k"}}}]},
            "at '/extraEnv/0/valueFrom/secretKeyRef': additional properties 'ky' not allowed",
        ),
        ({"extraEnv": [{"name": "A", "value": 1}]}, "at '/extraEnv/0/value': got number, want"),
        ({"extraEnv": {"A": "1"}}, "at '/extraEnv': got object, want array"),
        ({"podLabels": {"team": 7}}, "at '/podLabels/team': got number, want string"),
        ({"gateway": {"podAnnotations": {"a/b": True}}}, "at '/gateway/podAnnotations/a~1b'"),
        ({"podLabels": {"not a key": "x"}}, "invalid propertyName 'not a key'"),
        ({"priorityClassName": "High"}, "at '/priorityClassName'"),
        ({"imagePullSecrets": ["regcred"]}, "at '/imagePullSecrets/0': got string, want object"),
        ({"loadgen": {"nodeSelector": []}}, "at '/loadgen/nodeSelector': got array, want object"),
        (
            {"postgresql": {"tolerations": {"key": "db"}}},
            "at '/postgresql/tolerations': got object, want array",
        ),
        (
            {"istio": {"stockAdminPrincipals": ["stock-admin"]}},
            "at '/istio/stockAdminPrincipals/0'",
        ),
        (
            {"networkPolicy": {"stockAdminFrom": [{"podSelectr": {}}]}},
            "at '/networkPolicy/stockAdminFrom/0': additional properties 'podSelectr' not allowed",
        ),
    ],
)
def test_wrong_values_name_the_field(
    values: dict[str, Any], message: str, render_chart: ChartRenderer
) -> None:
    mode = values.pop("mode", "clusterip")
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render_chart(mode, values)


@pytest.mark.parametrize(
    ("mode", "values", "message"),
    [
        # No database at all: neither the in-chart one nor an external Secret.
        (
            "clusterip",
            {"postgresql": {"enabled": False}},
            "at '/externalDatabase/existingSecret': minLength: got 0, want 1",
        ),
        # Headless DNS balancing never sees a new pod unless servers age connections.
        (
            "headless",
            {"headless": {"maxConnectionAgeSeconds": 0}},
            "at '/headless/maxConnectionAgeSeconds': exclusiveMinimum: got 0, want 0",
        ),
        # The autoscaler measures CPU against requests; without them it never acts.
        (
            "clusterip",
            {"autoscaling": {"enabled": True}, "orders": {"resources": {"requests": None}}},
            "at '/orders/resources'",
        ),
    ],
)
def test_impossible_combinations_are_refused(
    mode: str, values: dict[str, Any], message: str, render_chart: ChartRenderer
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render_chart(mode, values)


def test_the_same_values_are_fine_alone(render_chart: ChartRenderer) -> None:
    # Each refused combination above is refused for the combination, not a part.
    render_chart("istio", {"headless": {"maxConnectionAgeSeconds": 0}})
    render_chart(
        "clusterip",
        {"postgresql": {"enabled": False}, "externalDatabase": {"existingSecret": "db"}},
    )
    render_chart("clusterip", {"orders": {"resources": {"requests": None}}})


def test_defaults_and_every_mode_pass_the_schema(mode: str, render_chart: ChartRenderer) -> None:
    assert render_chart(mode).of_kind("Deployment")
