"""The mesh side (istio/): every manifest valid, the files agreeing with each other,
the chart and the walkthrough (istio/README.md).

The objects come from the ``istio_manifests`` fixture and are checked with the same
``validate`` as the chart's (conftest.py): Kubernetes kinds against the schemas of
1.29-1.35 with unknown fields rejected, Istio kinds against cloudcoil's models. The
IstioOperator has neither; test_istio_mesh_profile.py checks it field by field.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest
import yaml

from ..support.chart import ChartRenderer, Manifest, Rendered, Validate
from ..support.paths import REPO

README = REPO / "istio" / "README.md"
# Release and namespace the walkthrough installs the chart as.
RELEASE = "shop"
SHOP_NAMESPACE = "shop"


def tracing_provider(folder: Rendered) -> tuple[str, dict[str, Any]]:
    """The one OpenTelemetry provider of the mesh config: (name, its settings)."""
    mesh = folder.get("IstioOperator")["spec"]["meshConfig"]
    providers = [p for p in mesh["extensionProviders"] if "opentelemetry" in p]
    assert len(providers) == 1, providers
    return providers[0]["name"], providers[0]["opentelemetry"]


def collector_address(folder: Rendered) -> tuple[str, int]:
    """Host and port of the collector's OTLP gRPC port, from the Service manifest."""
    service = folder.get("Service", "opentelemetry-collector")
    grpc_ports = [p for p in service["spec"]["ports"] if p.get("appProtocol") == "grpc"]
    assert len(grpc_ports) == 1, grpc_ports
    meta = service["metadata"]
    return f"{meta['name']}.{meta['namespace']}.svc.cluster.local", grpc_ports[0]["port"]


def collector_config(folder: Rendered) -> dict[str, Any]:
    config_map = folder.get("ConfigMap", "opentelemetry-collector")
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


def readme_commands() -> list[str]:
    """The lines of the README's ```bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip()]


# --- Every manifest is valid -----------------------------------------------------------


def test_the_folder_holds_the_expected_manifests(istio_manifests: Rendered) -> None:
    kinds = {(obj["__source__"], obj["kind"]) for obj in istio_manifests.objects}
    assert ("mesh.yaml", "IstioOperator") in kinds
    assert kinds >= {
        ("observability.yaml", k) for k in ("Namespace", "ConfigMap", "Deployment", "Service")
    }


def test_manifest_is_valid(istio_object: Manifest, validate: Validate) -> None:
    validate(istio_object)


def test_no_mesh_wide_peer_authentication(istio_manifests: Rendered) -> None:
    """Mesh-wide STRICT would refuse the non-mesh modes' plain-text calls (README)."""
    assert not istio_manifests.of_kind("PeerAuthentication"), "belongs in the chart"


def test_no_manifest_is_also_in_the_chart(
    mode: str, render_chart: ChartRenderer, istio_manifests: Rendered
) -> None:
    """istio/ holds what the chart does not: no kind/name rendered by both."""
    ours = {(o["kind"], o["metadata"]["name"]) for o in istio_manifests.manifests()}
    rendered = render_chart(mode, {"loadgen": {"enabled": True}})
    theirs = {(o["kind"], o["metadata"]["name"]) for o in rendered.manifests()}
    assert ours & theirs == set(), "kept in both places"


# --- The shared validation fails, naming the object and the path ----------------------


def test_kubernetes_validation_rejects_an_unknown_field(
    istio_manifests: Rendered, validate: Validate
) -> None:
    service = istio_manifests.get("Service")
    service["spec"]["ports"][0]["appProtocoll"] = "grpc"
    with pytest.raises(
        AssertionError,
        match=r"Service/opentelemetry-collector: .* at spec\.ports\.0: .*appProtocoll",
    ):
        validate(service)


def test_kubernetes_validation_rejects_an_unknown_kind(validate: Validate) -> None:
    with pytest.raises(AssertionError, match="Widget/None: no schema"):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}})


ISTIO_SAMPLE: Manifest = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "orders", "namespace": SHOP_NAMESPACE},
    "spec": {
        "host": "shop-orders.shop.svc.cluster.local",
        "trafficPolicy": {
            "loadBalancer": {"simple": "LEAST_REQUEST", "warmupDurationSecs": "30s"},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"},
        },
    },
}


def test_istio_validation_accepts_a_valid_object(validate: Validate) -> None:
    validate(ISTIO_SAMPLE)
    telemetry = {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "grpc-shop"}},
            "tracing": [{"providers": [{"name": "otel-tracing"}], "randomSamplingPercentage": 10}],
        },
    }
    validate(telemetry)


def test_istio_validation_rejects_an_unknown_field(validate: Validate) -> None:
    bad = yaml.safe_load(yaml.safe_dump(ISTIO_SAMPLE))
    bad["spec"]["trafficPolicy"]["loadBalancer"]["warmupDuration"] = "30s"
    with pytest.raises(
        AssertionError,
        match=r"DestinationRule/orders: [\s\S]*spec\.trafficPolicy\.loadBalancer\.warmupDuration",
    ):
        validate(bad)


def test_istio_validation_rejects_a_bad_enum(validate: Validate) -> None:
    bad = yaml.safe_load(yaml.safe_dump(ISTIO_SAMPLE))
    bad["spec"]["trafficPolicy"]["loadBalancer"]["simple"] = "LEAST_REQUESTS"
    with pytest.raises(
        pydantic.ValidationError,
        match=r"DestinationRule/orders\nspec\.trafficPolicy\.loadBalancer\.[\s\S]*LEAST_REQUEST",
    ):
        validate(bad)


def test_istio_validation_rejects_a_kind_without_model(validate: Validate) -> None:
    with pytest.raises(AssertionError, match="no model"):
        validate({"apiVersion": "networking.istio.io/v1", "kind": "Nonsense"})


# --- The files agree with each other ---------------------------------------------------


def test_tracing_provider_points_at_the_collector_service(istio_manifests: Rendered) -> None:
    name, otel = tracing_provider(istio_manifests)
    assert name == "otel-tracing"
    assert (otel["service"], otel["port"]) == collector_address(istio_manifests)


def test_collector_listens_where_its_service_sends(istio_manifests: Rendered) -> None:
    service = istio_manifests.get("Service", "opentelemetry-collector")
    deployment = istio_manifests.get("Deployment", "opentelemetry-collector")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (grpc_port,) = [p for p in service["spec"]["ports"] if p["appProtocol"] == "grpc"]
    assert grpc_port["name"].startswith("grpc"), "Istio reads the protocol from the port name"
    target = grpc_port["targetPort"]
    container_port = ports[target] if isinstance(target, str) else target
    assert container_port in ports.values()
    # The selector matches the pod, and the receiver binds that port on every interface.
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    config = collector_config(istio_manifests)
    receiver = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert receiver == f"0.0.0.0:{container_port}"
    # The probes hit the health_check extension's port.
    health = config["extensions"]["health_check"]["endpoint"]
    assert health == f"0.0.0.0:{ports['health']}"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"


# Collector v0.159.0 component type names, from each component's metadata.yaml in
# open-telemetry/opentelemetry-collector (core) and the health_check README (contrib),
# all in the otelcol distribution's manifest.yaml at v0.159.0. Deprecated aliases:
# exporter `otlp` (now `otlp_grpc`) and `otlphttp` (now `otlp_http`).
COLLECTOR_IMAGE = "otel/opentelemetry-collector:0.159.0"
COLLECTOR_TYPES = {
    "receivers": {"otlp", "nop"},
    "processors": {"batch", "memory_limiter"},
    "exporters": {"debug", "nop", "otlp_grpc", "otlp_http"},
    "extensions": {"health_check", "zpages"},
}


def test_collector_config_is_consistent(istio_manifests: Rendered) -> None:
    deployment = istio_manifests.get("Deployment", "opentelemetry-collector")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # Bumping the image means re-checking the component names above.
    assert container["image"] == COLLECTOR_IMAGE
    config = collector_config(istio_manifests)
    for section, known in COLLECTOR_TYPES.items():
        for component in config.get(section, {}):
            assert component.split("/")[0] in known, f"{section}.{component}: unknown type"
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    assert service["pipelines"], "no pipeline"
    for pipeline_name, pipeline in service["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for ref in pipeline.get(section, []):
                assert ref in config[section], f"{pipeline_name}: {section} {ref!r} not defined"
    # The config the Deployment reads is the ConfigMap's key.
    mount = container["volumeMounts"][0]["mountPath"]
    assert f"--config={mount}/config.yaml" in container["args"]


def test_collector_is_hardened_and_outside_the_mesh(istio_manifests: Rendered) -> None:
    namespace = istio_manifests.get("Namespace", "observability")
    assert namespace["metadata"]["labels"]["istio-injection"] == "disabled"
    pod = istio_manifests.get("Deployment", "opentelemetry-collector")["spec"]["template"]
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert ":" in container["image"] and not container["image"].endswith(":latest")
    assert "memory" in container["resources"]["limits"]


# --- The chart and the README agree with these files -----------------------------------


def test_chart_uses_the_mesh_tracing_provider(
    render_chart: ChartRenderer, istio_manifests: Rendered
) -> None:
    name, _ = tracing_provider(istio_manifests)
    telemetries = render_chart("istio").of_kind("Telemetry")
    assert telemetries, "mode=istio renders no Telemetry resource"
    for telemetry in telemetries:
        for tracing in telemetry["spec"]["tracing"]:
            assert [p["name"] for p in tracing["providers"]] == [name]


def test_readme_walks_through_every_mode(render_chart: ChartRenderer) -> None:
    # That each --set names a value of the chart: test_chart_values.py.
    set_flags = [m for c in readme_commands() for m in re.findall(r"--set (\S+?)=(\S+)", c)]
    assert {key for key, _ in set_flags} >= {"mode", "loadgen.enabled", "otel.endpoint"}
    used = {value for key, value in set_flags if key == "mode"}
    modes = set(render_chart.modes)
    assert used == modes, f"README walks through {sorted(used)}, the chart has {sorted(modes)}"


def test_readme_sends_traces_to_the_collector(istio_manifests: Rendered) -> None:
    endpoints = {
        value
        for c in readme_commands()
        for key, value in re.findall(r"--set (\S+?)=(\S+)", c)
        if key == "otel.endpoint"
    }
    assert endpoints == {"http://{}:{}".format(*collector_address(istio_manifests))}


def test_readme_references_files_that_exist() -> None:
    text = README.read_text()
    paths = set(re.findall(r"(?<![\w.-])((?:istio|helm)/[\w./-]+\.(?:yaml|md))", text))
    paths |= set(re.findall(r"(?<![\w.-])(helm/grpc-shop)\b", text))
    assert {"istio/mesh.yaml", "istio/observability.yaml"} <= paths
    for path in sorted(paths):
        assert (REPO / path).exists(), f"README names {path}, which does not exist"
    for command in readme_commands():
        for path in re.findall(r"-f (\S+\.yaml)", command):
            if "*" not in path:  # Istio's own samples, from its release archive
                assert (REPO / path).exists(), f"{command}: no file {path}"


def test_readme_names_objects_the_chart_and_manifests_create(
    render_chart: ChartRenderer, istio_manifests: Rendered
) -> None:
    """Deployments, Services and labels in the README's commands exist after the install."""
    rendered = render_chart("istio", {"loadgen": {"enabled": True}, "otel": {"endpoint": ""}})
    deployments = rendered.names("Deployment") | istio_manifests.names("Deployment")
    deployments.add("istiod")  # Istio's own, in istio-system
    services = {
        (o["metadata"]["name"], p["port"])
        for o in rendered.of_kind("Service")
        for p in o["spec"]["ports"]
    }
    pod_labels = [
        o["spec"]["template"]["metadata"]["labels"] for o in rendered.of_kind("Deployment")
    ]
    commands = " ".join(readme_commands())
    named = set(re.findall(r"deploy/([a-z0-9-]+)", commands))
    assert named >= {f"{RELEASE}-loadgen", f"{RELEASE}-gateway"}
    assert named <= deployments, f"no such Deployment: {sorted(named - deployments)}"
    clusters = re.findall(r"outbound\|(\d+)\|\|([a-z0-9-]+)\.(\w+)\.svc\.cluster\.local", commands)
    assert clusters
    for port, name, namespace in clusters:
        assert namespace == SHOP_NAMESPACE and (name, int(port)) in services, (name, port)
    for key, value in re.findall(r"-l (\S+?)=(\S+)", commands):
        assert any(labels.get(key) == value for labels in pod_labels), f"no pod has {key}={value}"
    # helm test needs the chart's test hook.
    hooks = [
        o for o in rendered.manifests() if o["metadata"].get("annotations", {}).get("helm.sh/hook")
    ]
    assert any(o["metadata"]["annotations"]["helm.sh/hook"] == "test" for o in hooks)


def test_readme_queries_name_real_metrics_and_services() -> None:
    from prometheus_client import generate_latest

    from shop.runtime.metrics import RpcMetrics

    text = README.read_text()
    queries = re.findall(r"```promql\n(.*?)```", text, flags=re.DOTALL)
    assert queries
    # Family names as Prometheus scrapes them (a counter's exposition adds `_total`).
    exposition = generate_latest(RpcMetrics.create("inventory", "pod-0").registry).decode()
    exported = set(re.findall(r"^# TYPE (\w+) ", exposition, flags=re.MULTILINE))
    assert "grpc_server_handled_total" in " ".join(queries)
    declared = set()
    for proto in (REPO / "proto").rglob("*.proto"):
        source = proto.read_text()
        package = re.search(r"^package ([\w.]+);", source, flags=re.MULTILINE)
        for service in re.findall(r"^service (\w+)", source, flags=re.MULTILINE):
            declared.add(f"{package.group(1) if package else ''}.{service}")
    for query in queries:
        for metric in re.findall(r"\b(grpc_\w+)\{", query):
            assert metric in exported, f"the services export no {metric}"
        for service in re.findall(r'grpc_service="([^"]+)"', query):
            assert service in declared, f"no gRPC service {service} in proto/"
