"""istio/mesh.yaml's IstioOperator: well-formed for Istio 1.30.3, and what the project needs.

The IstioOperator has no published schema or model: no PyPI package ships the
IstioOperator or MeshConfig types, and istiod itself ignores unknown meshConfig
fields without an error. So it is checked against field names and types copied by
hand from Istio 1.30.3's sources (the ``*_FIELDS`` facts below); the other objects
of istio/ go through the shared ``validate`` (test_istio_manifests.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from ..support.chart import ChartRenderer, Manifest, Rendered

# --- The IstioOperator: facts from Istio 1.30.3 --------------------------------------
#
# Copied by hand, because nothing installable ships these types and the tests have no
# network. When mesh.yaml uses a field that is not here, look it up in the same file
# and add it. Field names are the proto JSON names (lowerCamelCase).
ISTIO_VERSION_CHECKED = "1.30.3"

# istio/istio 1.30.3 operator/pkg/apis/types.go: IstioOperatorSpec json tags.
OPERATOR_SPEC_FIELDS = frozenset(
    {
        "profile", "installPackagePath", "hub", "tag", "namespace", "revision",
        "compatibilityVersion", "meshConfig", "components", "values", "unvalidatedValues",
    }
)  # fmt: skip
# Same file: IstioComponentSpec, and the fields of its component specs.
OPERATOR_COMPONENTS = frozenset(
    {"base", "pilot", "cni", "ztunnel", "istiodRemote", "ingressGateways", "egressGateways"}
)
GATEWAY_COMPONENT_FIELDS = frozenset({"enabled", "namespace", "hub", "tag", "k8s", "name", "label"})
# istio/istio 1.30.3 manifests/profiles/*.yaml.
OPERATOR_PROFILES = frozenset(
    {
        "ambient", "default", "demo", "empty", "minimal", "openshift", "openshift-ambient",
        "preview", "remote", "stable",
    }
)  # fmt: skip

# istio/api v1.30.3 mesh/v1alpha1/config.proto, message MeshConfig: every field.
MESH_CONFIG_FIELDS = frozenset(
    {
        "accessLogEncoding", "accessLogFile", "accessLogFormat", "ca", "caCertificates",
        "certificates", "configSources", "connectTimeout", "defaultConfig",
        "defaultDestinationRuleExportTo", "defaultHttpRetryPolicy", "defaultProviders",
        "defaultServiceExportTo", "defaultVirtualServiceExportTo", "disableEnvoyListenerLog",
        "discoverySelectors", "dnsRefreshRate", "enableAutoMtls", "enableEnvoyAccessLogService",
        "enablePrometheusMerge", "enableTracing", "extensionProviders", "h2UpgradePolicy",
        "hboneIdleTimeout", "inboundClusterStatName", "inboundTrafficPolicy", "ingressClass",
        "ingressControllerMode", "ingressSelector", "ingressService", "localityLbSetting",
        "meshMTLS", "outboundClusterStatName", "outboundTrafficPolicy", "pathNormalization",
        "protocolDetectionTimeout", "proxyHttpPort", "proxyInboundListenPort", "proxyListenPort",
        "rootNamespace", "serviceScopeConfigs", "serviceSettings", "tcpKeepalive", "tlsDefaults",
        "trustDomain", "trustDomainAliases", "verifyCertificateAtClient",
    }
)  # fmt: skip
# Same file: message MeshConfig.ExtensionProvider is `name` plus one provider (oneof).
EXTENSION_PROVIDER_KINDS = frozenset(
    {
        "envoyExtAuthzHttp", "envoyExtAuthzGrpc", "zipkin", "lightstep", "datadog",
        "stackdriver", "opencensus", "skywalking", "opentelemetry", "prometheus",
        "envoyFileAccessLog", "envoyHttpAls", "envoyTcpAls", "envoyOtelAls", "sds",
    }
)  # fmt: skip
# Same file: message MeshConfig.ExtensionProvider.OpenTelemetryTracingProvider.
OTEL_PROVIDER_FIELDS = frozenset(
    {
        "service", "port", "maxTagLength", "http", "grpc", "resourceDetectors",
        "serviceAttributeEnrichment", "dynatraceSampler",
    }
)  # fmt: skip
# istio/api v1.30.3 mesh/v1alpha1/proxy.proto, message ProxyConfig: every field.
PROXY_CONFIG_FIELDS = frozenset(
    {
        "availabilityZone", "binaryPath", "caCertificatesPem", "concurrency", "configPath",
        "controlPlaneAuthPolicy", "customConfigFile", "discoveryAddress",
        "discoveryRefreshDelay", "drainDuration", "envoyAccessLogService",
        "envoyMetricsService", "envoyMetricsServiceAddress", "extraStatTags",
        "fileFlushInterval", "fileFlushMinSizeKb", "gatewayTopology",
        "holdApplicationUntilProxyStarts", "image", "interceptionMode", "meshId",
        "privateKeyProvider", "proxyAdminPort", "proxyBootstrapTemplatePath", "proxyHeaders",
        "proxyMetadata", "proxyStatsMatcher", "readinessProbe", "runtimeValues", "sds",
        "serviceCluster", "statNameLength", "statsCompression", "statsdUdpAddress",
        "statusPort", "terminationDrainDuration", "tracing", "tracingServiceName",
        "zipkinAddress",
    }
)  # fmt: skip
# Fields marked `[deprecated = true]` in those files: not to be used.
DEPRECATED_FIELDS = frozenset(
    {
        "MeshConfig.certificates", "MeshConfig.verifyCertificateAtClient",
        "ExtensionProvider.lightstep", "ExtensionProvider.opencensus",
        "ProxyConfig.availabilityZone", "ProxyConfig.discoveryRefreshDelay",
        "ProxyConfig.envoyMetricsServiceAddress", "ProxyConfig.sds", "ProxyConfig.zipkinAddress",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Enum:
    """A proto enum, written as its value names in JSON."""

    values: frozenset[str]


@dataclass(frozen=True)
class Message:
    """A proto message: every field Istio knows, and the types of the ones we check."""

    name: str
    fields: frozenset[str]
    # Types of the fields this project sets: "string", "bool" (also BoolValue),
    # "uint32", "duration" (google.protobuf.Duration as JSON: "10s"), an Enum, a
    # Message, or a one-item list meaning "repeated". A known field without a type
    # here fails with "type not recorded", so every field used is type-checked.
    types: Mapping[str, Any] = field(default_factory=dict)
    # Groups of fields of which at most one may be set (proto oneof).
    oneofs: tuple[frozenset[str], ...] = ()


OTEL_PROVIDER = Message(
    "OpenTelemetryTracingProvider",
    OTEL_PROVIDER_FIELDS,
    {"service": "string", "port": "uint32", "maxTagLength": "uint32"},
)
EXTENSION_PROVIDER = Message(
    "ExtensionProvider",
    EXTENSION_PROVIDER_KINDS | {"name"},
    {"name": "string", "opentelemetry": OTEL_PROVIDER},
    oneofs=(EXTENSION_PROVIDER_KINDS,),
)
# proxy.proto, message ProxyConfig.ProxyStatsMatcher: every field (repeated string).
PROXY_STATS_MATCHER_FIELDS = frozenset(
    {"inclusionPrefixes", "inclusionSuffixes", "inclusionRegexps"}
)
PROXY_STATS_MATCHER = Message(
    "ProxyStatsMatcher",
    PROXY_STATS_MATCHER_FIELDS,
    {name: ["string"] for name in PROXY_STATS_MATCHER_FIELDS},
)
PROXY_CONFIG = Message(
    "ProxyConfig",
    PROXY_CONFIG_FIELDS,
    {
        "holdApplicationUntilProxyStarts": "bool",
        "proxyStatsMatcher": PROXY_STATS_MATCHER,
        "terminationDrainDuration": "duration",
        # proxy.proto enum ProxyConfig.TracingServiceName.
        "tracingServiceName": Enum(
            frozenset(
                {"APP_LABEL_AND_NAMESPACE", "CANONICAL_NAME_ONLY", "CANONICAL_NAME_AND_NAMESPACE"}
            )
        ),
    },
    oneofs=(frozenset({"serviceCluster", "tracingServiceName"}),),
)
MESH_CONFIG = Message(
    "MeshConfig",
    MESH_CONFIG_FIELDS,
    {
        "accessLogFile": "string",
        "accessLogFormat": "string",
        # config.proto enum MeshConfig.AccessLogEncoding.
        "accessLogEncoding": Enum(frozenset({"TEXT", "JSON"})),
        "enableTracing": "bool",
        "enablePrometheusMerge": "bool",
        "protocolDetectionTimeout": "duration",
        "extensionProviders": [EXTENSION_PROVIDER],
        "defaultConfig": PROXY_CONFIG,
    },
)
GATEWAY_COMPONENT = Message(
    "GatewayComponentSpec",
    GATEWAY_COMPONENT_FIELDS,
    {"name": "string", "enabled": "bool", "namespace": "string"},
)
COMPONENTS = Message(
    "IstioComponentSpec",
    OPERATOR_COMPONENTS,
    {"ingressGateways": [GATEWAY_COMPONENT], "egressGateways": [GATEWAY_COMPONENT]},
)
OPERATOR_SPEC = Message(
    "IstioOperatorSpec",
    OPERATOR_SPEC_FIELDS,
    {
        "profile": Enum(OPERATOR_PROFILES),
        "hub": "string",
        "tag": "string",
        "revision": "string",
        "meshConfig": MESH_CONFIG,
        "components": COMPONENTS,
    },
)

_DURATION = re.compile(r"^\d+(\.\d{1,9})?s$")  # protobuf JSON Duration: seconds, "s" suffix


def _check(value: Any, schema: Any, path: str) -> Iterator[str]:
    """Errors of ``value`` against one type of the little schema above."""
    if isinstance(schema, Message):
        if not isinstance(value, dict):
            yield f"{path}: expected a {schema.name} mapping, got {value!r}"
            return
        for group in schema.oneofs:
            chosen = sorted(group & value.keys())
            if len(chosen) > 1:
                yield f"{path}: at most one of {chosen} (a oneof in {schema.name})"
        for key, item in value.items():
            where = f"{path}.{key}"
            if key not in schema.fields:
                yield f"{where}: no field {key!r} in {schema.name} (Istio {ISTIO_VERSION_CHECKED})"
            elif f"{schema.name}.{key}" in DEPRECATED_FIELDS:
                yield f"{where}: deprecated in Istio {ISTIO_VERSION_CHECKED}"
            elif key not in schema.types:
                yield f"{where}: type not recorded in this test; add it from Istio's proto"
            else:
                yield from _check(item, schema.types[key], where)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            yield f"{path}: expected a list, got {value!r}"
            return
        for index, item in enumerate(value):
            yield from _check(item, schema[0], f"{path}[{index}]")
    elif isinstance(schema, Enum):
        if value not in schema.values:
            yield f"{path}: {value!r} is not one of {sorted(schema.values)}"
    elif schema == "string":
        if not isinstance(value, str):
            yield f"{path}: expected a string, got {value!r}"
    elif schema == "bool":
        if not isinstance(value, bool):
            yield f"{path}: expected true or false, got {value!r}"
    elif schema == "uint32":
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32):
            yield f"{path}: expected an unsigned 32-bit integer, got {value!r}"
    elif schema == "duration":
        if not (isinstance(value, str) and _DURATION.match(value)):
            yield f"{path}: expected a duration in seconds like '10s', got {value!r}"
    else:
        raise TypeError(f"unknown schema type {schema!r}")


def validate_istio_operator(obj: Manifest) -> None:
    """Check an IstioOperator against the Istio 1.30.3 facts above."""
    problems: list[str] = []
    unknown_top = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    problems += [f"{key}: not an IstioOperator field" for key in sorted(unknown_top)]
    metadata = obj.get("metadata", {})
    unknown_meta = set(metadata) - {"name", "namespace", "labels", "annotations"}
    problems += [f"metadata.{key}: not checked here" for key in sorted(unknown_meta)]
    problems += _check(obj.get("spec", {}), OPERATOR_SPEC, "spec")
    name = metadata.get("name")
    assert not problems, f"IstioOperator/{name}:\n" + "\n".join(problems)


# --- mesh.yaml passes, and the checker can fail ----------------------------------------


def test_mesh_operator_is_valid(istio_manifests: Rendered) -> None:
    validate_istio_operator(istio_manifests.get("IstioOperator"))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["meshConfig", "accessLogFiles"],
            "/dev/stdout",
            "no field 'accessLogFiles' in MeshConfig",
        ),
        (["meshConfig", "accessLogEncoding"], "YAML", "not one of"),
        (["meshConfig", "protocolDetectionTimeout"], "1m", "duration"),
        (["meshConfig", "enablePrometheusMerge"], "true", "true or false"),
        (["meshConfig", "defaultConfig", "holdApplicationUntilProxyStart"], True, "no field"),
        (["meshConfig", "defaultConfig", "zipkinAddress"], "zipkin:9411", "deprecated"),
        (["meshConfig", "defaultConfig", "serviceCluster"], "shop", "at most one of"),
        (["meshConfig", "ingressClass"], "istio", "type not recorded"),
        (["profile"], "defualt", "not one of"),
        (["components", "ingressGateway"], [], "no field"),
    ],
)
def test_istio_operator_validation_rejects(
    path: list[str], value: Any, message: str, istio_manifests: Rendered
) -> None:
    operator = istio_manifests.get("IstioOperator")
    node = operator["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(AssertionError, match=re.escape(message)):
        validate_istio_operator(operator)


def test_the_charts_proxy_config_annotations_are_valid(
    mode: str, render_chart: ChartRenderer
) -> None:
    """The chart's pods carry ProxyConfig too (proxy.istio.io/config, which Istio merges
    over meshConfig.defaultConfig): the same check as defaultConfig's, in every mode."""
    rendered = render_chart(mode, {"loadgen": {"enabled": True}})
    pods = [w["spec"]["template"] for w in rendered.of_kind("Deployment")]
    pods += [w["spec"]["template"] for w in rendered.of_kind("StatefulSet")]
    pods += rendered.of_kind("Pod")
    problems: list[str] = []
    for pod in pods:
        text = pod["metadata"].get("annotations", {}).get("proxy.istio.io/config")
        if text is not None:
            where = f"{pod['metadata']['labels']['app.kubernetes.io/component']}: {text}"
            problems += _check(yaml.safe_load(text), PROXY_CONFIG, where)
    assert problems == []


def test_proxy_config_validation_rejects_a_misspelt_stats_matcher() -> None:
    config: dict[str, Any] = {"proxyStatsMatcher": {"inclusionRegexp": ["cluster[.].*"]}}
    assert list(_check(config, PROXY_CONFIG, "pod")) == [
        "pod.proxyStatsMatcher.inclusionRegexp: no field 'inclusionRegexp' in ProxyStatsMatcher"
        f" (Istio {ISTIO_VERSION_CHECKED})"
    ]
    config = {"proxyStatsMatcher": {"inclusionRegexps": "cluster[.].*"}}
    assert list(_check(config, PROXY_CONFIG, "pod")) == [
        "pod.proxyStatsMatcher.inclusionRegexps: expected a list, got 'cluster[.].*'"
    ]


def test_istio_operator_validation_rejects_a_bad_provider(istio_manifests: Rendered) -> None:
    operator = istio_manifests.get("IstioOperator")
    provider = operator["spec"]["meshConfig"]["extensionProviders"][0]
    provider["opentelemetry"]["port"] = "4317"
    provider["zipkin"] = {"service": "zipkin", "port": 9411}
    with pytest.raises(AssertionError) as caught:
        validate_istio_operator(operator)
    assert "unsigned 32-bit" in str(caught.value) and "at most one of" in str(caught.value)


# --- mesh.yaml says what the project needs -------------------------------------------


def test_mesh_profile_settings(istio_manifests: Rendered) -> None:
    operator = istio_manifests.get("IstioOperator")
    assert operator["metadata"]["namespace"] == "istio-system"
    assert operator["spec"]["profile"] == "default"
    mesh = operator["spec"]["meshConfig"]
    assert mesh["accessLogFile"] == "/dev/stdout"
    assert mesh["accessLogEncoding"] == "JSON"
    assert mesh["enablePrometheusMerge"] is True
    assert mesh["defaultConfig"]["holdApplicationUntilProxyStarts"] is True
    # A non-zero detection timeout is unsafe (config.proto); the chart names its ports.
    assert mesh["protocolDetectionTimeout"] == "0s"
    # Tracing is selected per workload by the chart's Telemetry, never mesh-wide.
    assert "tracing" not in mesh.get("defaultProviders", {})
