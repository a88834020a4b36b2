"""The chart stays the source of truth: the lab's Envoy sidecars say what ``mode=istio`` says.

The chart's ``mode=istio`` speaks in Istio objects (DestinationRules, a
PeerAuthentication, AuthorizationPolicies, and no VirtualService); the lab builds its
sidecars' xDS from one record, ``shop.lab.mesh_policy.CHART_MESH``, through
``shop.lab.sidecar_resources``. These tests render the chart with its defaults and read
the Envoy protobufs the lab would send (``Any`` fields unpacked into their messages),
so a change on either side that the other does not follow fails here.

The lab's identities are ``spiffe://cluster.local/ns/shop/sa/<component>``; the chart's
are ``cluster.local/ns/<release namespace>/sa/<fullname>-<component>``: callers are
compared by component.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from shop.lab import sidecar_resources as sidecar
from shop.lab.endpoints import service_host
from shop.lab.envoy import bootstrap
from shop.lab.mesh_ca import spiffe_id
from shop.lab.mesh_policy import CHART_MESH
from shop.lab.modes.istio import MESH_SERVICES
from shop.lab.xds_resources import cluster_name
from shop.local.addresses import AddressPlan

from ..support.chart import NAMESPACE, ChartRenderer, Manifest, Rendered

PLAN = AddressPlan()
APP_PORT = PLAN.grpc_port
COMPONENT = "app.kubernetes.io/component"
# Two replicas of every service with a sidecar: what one pod gets, another gets alike.
PODS = [sidecar.SidecarPod(s, i, PLAN.ip(s, i)) for s in MESH_SERVICES for i in range(2)]

# DestinationRule loadBalancer.simple -> the Envoy load balancing policy istiod configures
# and the message its typed_config holds.
ENVOY_LB_POLICIES: dict[str, tuple[str, Any]] = {
    "LEAST_REQUEST": (
        "envoy.load_balancing_policies.least_request",
        least_request_pb2.LeastRequest,
    ),
    "ROUND_ROBIN": ("envoy.load_balancing_policies.round_robin", round_robin_pb2.RoundRobin),
}

# Istio's route retries when no VirtualService sets any: istio/istio
# pilot/pkg/networking/core/route/retry/retry.go, DefaultPolicy() (NumRetries 2, this
# RetryOn, HostSelectionRetryMaxAttempts 5, RetryHostPredicate previous_hosts) with 503
# retriable unless istiod runs with EXCLUDE_503_FROM_DEFAULT_RETRIES (istio/ sets no
# such thing). A fact about Istio, so written here, not taken from the lab's record.
ISTIO_DEFAULT_RETRIES = {
    "num_retries": 2,
    "retry_on": {
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    },
    "retriable_status_codes": [503],
    "retry_host_predicates": ["envoy.retry_host_predicates.previous_hosts"],
    "host_selection_retry_max_attempts": 5,
}

# A caller that any mesh peer may be (an Istio rule without ``from``, an RBAC ``any``).
ANY_PEER = "<any peer>"
# (caller component or ANY_PEER, (matcher kind "exact"/"prefix", path))
Access = set[tuple[str, tuple[str, str]]]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def istio_seconds(text: str) -> float:
    """An Istio (Go) duration such as ``10s``, ``1m30s`` or ``500ms``, in seconds."""
    parts = _DURATION_PART.findall(text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(number + unit for number, unit in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def seconds(duration: Any) -> float:
    """A google.protobuf.Duration in seconds."""
    value: float = duration.ToTimedelta().total_seconds()
    return value


# --- the chart ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart(render_chart: ChartRenderer) -> Rendered:
    return render_chart("istio")


def by_component(objects: list[Manifest]) -> dict[str, Manifest]:
    found = {obj["metadata"]["labels"][COMPONENT]: obj for obj in objects}
    assert len(found) == len(objects), [obj["metadata"]["name"] for obj in objects]
    return found


def destination_rules(chart: Rendered) -> dict[str, Manifest]:
    """The DestinationRules of the services the lab's sidecars call, by component."""
    rules = by_component(chart.of_kind("DestinationRule"))
    assert set(sidecar.OUTBOUND_PORTS) <= set(rules), sorted(rules)
    return rules


def chart_caller(chart: Rendered, principal: str) -> str:
    """The component whose pods present ``principal`` (their ServiceAccount's identity)."""
    match = re.fullmatch(rf"cluster\.local/ns/{re.escape(NAMESPACE)}/sa/([^/]+)", principal)
    assert match, f"not an identity of the release's namespace: {principal}"
    components: list[str] = [
        workload["metadata"]["labels"][COMPONENT]
        for workload in chart.of_kind("Deployment")
        if workload["spec"]["template"]["spec"].get("serviceAccountName") == match[1]
    ]
    assert len(components) == 1, f"{principal}: the pods of {components} run as {match[1]}"
    return components[0]


def istio_path(path: str) -> tuple[str, str]:
    """An AuthorizationPolicy path as (kind, value): ``x*`` is a prefix, else exact."""
    assert "*" not in path.removesuffix("*"), f"{path}: only exact and prefix paths compare"
    return ("prefix", path.removesuffix("*")) if path.endswith("*") else ("exact", path)


def chart_access(chart: Rendered, policy: Manifest, grpc_port: int) -> Access:
    """Who may call which path on the gRPC port, per the ALLOW policy's rules."""
    assert policy["spec"]["action"] == "ALLOW"
    pairs: Access = set()
    for rule in policy["spec"]["rules"]:
        sources = rule.get("from")
        if sources is None:
            callers = {ANY_PEER}
        else:
            assert all(set(source["source"]) == {"principals"} for source in sources), rule
            callers = {
                chart_caller(chart, principal)
                for source in sources
                for principal in source["source"]["principals"]
            }
        for target in rule["to"]:
            operation = target["operation"]
            assert set(operation) <= {"ports", "paths"}, operation
            if operation["ports"] != [str(grpc_port)]:
                continue  # the metrics port: test_mtls_mode_and_metrics_port_outside_the_mesh
            pairs |= {
                (caller, istio_path(path)) for caller in callers for path in operation["paths"]
            }
    return pairs


def grpc_port(chart: Rendered) -> int:
    """The port the AuthorizationPolicies' path rules guard: the services' gRPC port."""
    ports = {
        port
        for policy in chart.of_kind("AuthorizationPolicy")
        for rule in policy["spec"]["rules"]
        for target in rule["to"]
        if "paths" in target["operation"]
        for port in target["operation"]["ports"]
    }
    assert len(ports) == 1, ports
    return int(ports.pop())


# --- the lab's Envoy configuration ----------------------------------------------------


def outbound_clusters(pod: sidecar.SidecarPod) -> dict[str, Any]:
    """A pod's outbound clusters by the service they reach."""
    found = {c.name: c for c in sidecar.clusters(pod, APP_PORT, CHART_MESH)}
    outbound = {name for name in found if name.startswith("outbound|")}
    expected = {s: cluster_name(service_host(s), APP_PORT) for s in sidecar.OUTBOUND_PORTS}
    assert outbound == set(expected.values()), sorted(found)
    return {service: found[name] for service, name in expected.items()}


def all_outbound_clusters() -> Iterator[tuple[str, str, Any]]:
    """(pod, called service, cluster) of every pod."""
    for pod in PODS:
        for service, cluster in outbound_clusters(pod).items():
            yield pod.name, service, cluster


def lb_policy(cluster: Any) -> tuple[str, Any]:
    """The cluster's load balancing policy: its extension name and unpacked config."""
    policies = cluster.load_balancing_policy.policies
    assert len(policies) == 1, cluster.name
    extension = policies[0].typed_extension_config
    known = {name: message for name, message in ENVOY_LB_POLICIES.values()}
    assert extension.name in known, f"{cluster.name}: {extension.name}"
    config = known[extension.name]()
    assert extension.typed_config.Unpack(config), f"{cluster.name}: {extension.typed_config}"
    return extension.name, config


def listeners(pod: sidecar.SidecarPod, direction: int) -> list[Any]:
    found = sidecar.listeners(pod, APP_PORT, CHART_MESH)
    return [listener for listener in found if listener.traffic_direction == direction]


def inbound_listener(pod: sidecar.SidecarPod) -> Any:
    [listener] = listeners(pod, base_pb2.INBOUND)
    assert listener.address.socket_address.port_value == sidecar.INBOUND_PORT
    return listener


def connection_manager(chain: Any) -> Any:
    [network_filter] = chain.filters
    manager = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(manager), network_filter.typed_config.type_url
    return manager


def rbac_filters(manager: Any) -> list[Any]:
    found = []
    for http_filter in manager.http_filters:
        if http_filter.name == "envoy.filters.http.rbac":
            config = rbac_filter_pb2.RBAC()
            assert http_filter.typed_config.Unpack(config), http_filter.typed_config.type_url
            found.append(config)
    return found


def retry_summary(retry: Any) -> dict[str, Any]:
    """A route's RetryPolicy in the form of ISTIO_DEFAULT_RETRIES (host predicates
    unpacked: a predicate whose config is not PreviousHostsPredicate fails)."""
    predicates = []
    for predicate in retry.retry_host_predicate:
        config = previous_hosts_pb2.PreviousHostsPredicate()
        assert predicate.typed_config.Unpack(config), predicate
        predicates.append(predicate.name)
    return {
        "num_retries": retry.num_retries.value,
        "retry_on": set(retry.retry_on.split(",")),
        "retriable_status_codes": list(retry.retriable_status_codes),
        "retry_host_predicates": predicates,
        "host_selection_retry_max_attempts": retry.host_selection_retry_max_attempts,
    }


LAB_CALLERS = {spiffe_id(service): service for service in MESH_SERVICES}


def envoy_callers(principal: Any) -> set[str]:
    """The components an RBAC principal matches (ANY_PEER for ``any``)."""
    kind = principal.WhichOneof("identifier")
    if kind == "or_ids":
        return {caller for child in principal.or_ids.ids for caller in envoy_callers(child)}
    if kind == "any":
        assert principal.any
        return {ANY_PEER}
    assert kind == "authenticated", f"unexpected principal: {principal}"
    matcher = principal.authenticated.principal_name
    assert matcher.WhichOneof("match_pattern") == "exact" and not matcher.ignore_case, matcher
    assert matcher.exact in LAB_CALLERS, f"not a lab identity: {matcher.exact}"
    return {LAB_CALLERS[matcher.exact]}


def envoy_paths(permission: Any) -> set[tuple[str, str]]:
    """The paths an RBAC permission matches, as (kind, value)."""
    kind = permission.WhichOneof("rule")
    if kind == "or_rules":
        return {path for child in permission.or_rules.rules for path in envoy_paths(child)}
    assert kind == "url_path", f"unexpected permission: {permission}"
    matcher = permission.url_path.path
    pattern = matcher.WhichOneof("match_pattern")
    assert pattern in ("exact", "prefix") and not matcher.ignore_case, matcher
    return {(pattern, getattr(matcher, pattern))}


def envoy_access(config: Any) -> Access:
    """Who may call which path, per an ALLOW RBAC filter: a policy lets any of its
    principals call any of its permissions' paths."""
    assert config.rules.action == rbac_pb2.RBAC.ALLOW
    pairs: Access = set()
    for policy in config.rules.policies.values():
        callers = {c for principal in policy.principals for c in envoy_callers(principal)}
        paths = {p for permission in policy.permissions for p in envoy_paths(permission)}
        pairs |= {(caller, path) for caller in callers for path in paths}
    return pairs


# --- the tests ------------------------------------------------------------------------


def test_istio_durations_parse() -> None:
    assert istio_seconds("10s") == 10.0
    assert istio_seconds("1m30s") == 90.0
    assert istio_seconds("500ms") == 0.5
    with pytest.raises(AssertionError):
        istio_seconds("30")
    with pytest.raises(AssertionError):
        istio_seconds("10 s")


def test_load_balancing_algorithm(chart: Rendered) -> None:
    for component, rule in destination_rules(chart).items():
        simple = rule["spec"]["trafficPolicy"]["loadBalancer"]["simple"]
        assert simple == CHART_MESH.load_balancer, component
    expected_name, expected_message = ENVOY_LB_POLICIES[CHART_MESH.load_balancer]
    assert expected_name == "envoy.load_balancing_policies.least_request"  # the chart's default
    for pod, service, cluster in all_outbound_clusters():
        name, config = lb_policy(cluster)
        assert name == expected_name, (pod, service)
        assert isinstance(config, expected_message), (pod, service)


def test_slow_start(chart: Rendered) -> None:
    for component, rule in destination_rules(chart).items():
        warmup = istio_seconds(rule["spec"]["trafficPolicy"]["loadBalancer"]["warmupDurationSecs"])
        assert warmup > 0, component
        # The lab warms pods up over a shorter window than the chart on purpose (its runs
        # last seconds; see MeshPolicy.warmup_s): shorter or equal, never off, never longer.
        assert 0 < CHART_MESH.warmup_s <= warmup, component
    for pod, service, cluster in all_outbound_clusters():
        _, config = lb_policy(cluster)
        assert config.HasField("slow_start_config"), (pod, service)
        window = seconds(config.slow_start_config.slow_start_window)
        assert window == CHART_MESH.warmup_s, (pod, service)


def test_outlier_detection(chart: Rendered) -> None:
    rules = destination_rules(chart)
    for pod, service, cluster in all_outbound_clusters():
        chart_outlier = rules[service]["spec"]["trafficPolicy"]["outlierDetection"]
        assert cluster.HasField("outlier_detection"), (pod, service)
        envoy = cluster.outlier_detection
        assert envoy.consecutive_5xx.value == chart_outlier["consecutive5xxErrors"], (pod, service)
        assert seconds(envoy.interval) == istio_seconds(chart_outlier["interval"])
        assert seconds(envoy.base_ejection_time) == istio_seconds(chart_outlier["baseEjectionTime"])
        assert envoy.max_ejection_percent.value == chart_outlier["maxEjectionPercent"]
        # As istiod translates consecutive5xxErrors: that rule enforced, success rate not.
        assert envoy.enforcing_consecutive_5xx.value == 100, (pod, service)
        assert envoy.HasField("enforcing_success_rate"), (pod, service)
        assert envoy.enforcing_success_rate.value == 0, (pod, service)


def test_retry_policy_is_istios_default(chart: Rendered) -> None:
    # No VirtualService: istiod gives every outbound route its default retry policy.
    assert chart.of_kind("VirtualService") == []
    routes = 0
    for pod in PODS:
        outbound = listeners(pod, base_pb2.OUTBOUND)
        assert {listener.name for listener in outbound} == {
            f"outbound_{service}" for service in sidecar.OUTBOUND_PORTS
        }
        for listener in outbound:
            [chain] = listener.filter_chains
            manager = connection_manager(chain)
            for host in manager.route_config.virtual_hosts:
                for route in host.routes:
                    routes += 1
                    summary = retry_summary(route.route.retry_policy)
                    assert summary == ISTIO_DEFAULT_RETRIES, (pod.name, listener.name)
    assert routes == len(PODS) * len(sidecar.OUTBOUND_PORTS)


def test_mtls_mode_and_metrics_port_outside_the_mesh(chart: Rendered) -> None:
    peer = chart.get("PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == CHART_MESH.mtls_mode == "STRICT"
    for pod in PODS:
        # STRICT: every inbound filter chain is TLS that requires a client certificate
        # (PERMISSIVE would add a plain-text chain).
        listener = inbound_listener(pod)
        assert listener.filter_chains, pod.name
        for chain in listener.filter_chains:
            assert chain.transport_socket.name == "envoy.transport_sockets.tls", pod.name
            tls = tls_pb2.DownstreamTlsContext()
            assert chain.transport_socket.typed_config.Unpack(tls), pod.name
            assert tls.HasField("require_client_certificate"), pod.name
            assert tls.require_client_certificate.value is True, pod.name
            validation = tls.common_tls_context.validation_context_sds_secret_config
            assert validation.name == sidecar.ROOT_SECRET, pod.name
        # ... and the caller's side presents its certificate (istiod's auto mTLS).
        for service, cluster in outbound_clusters(pod).items():
            tls_up = tls_pb2.UpstreamTlsContext()
            assert cluster.transport_socket.typed_config.Unpack(tls_up), (pod.name, service)
            configs = tls_up.common_tls_context.tls_certificate_sds_secret_configs
            assert [c.name for c in configs] == [sidecar.CERT_SECRET], (pod.name, service)

    # The chart's metrics port is PERMISSIVE and open to anyone (Prometheus outside the
    # mesh); the lab scrapes the apps' metrics port directly, with no sidecar on it.
    [(metrics_port, port_mtls)] = peer["spec"]["portLevelMtls"].items()
    assert port_mtls == {"mode": "PERMISSIVE"}
    assert int(metrics_port) == PLAN.metrics_port == 9464
    for policy in chart.of_kind("AuthorizationPolicy"):
        assert {"to": [{"operation": {"ports": [metrics_port]}}]} in policy["spec"]["rules"]
    for pod in PODS:
        bound = {
            listener.address.socket_address.port_value
            for listener in sidecar.listeners(pod, APP_PORT, CHART_MESH)
        }
        assert PLAN.metrics_port not in bound, pod.name
        # Nor in the bootstrap: no static listener, the admin port elsewhere.
        config = json_format.ParseDict(bootstrap(pod, "127.0.0.1:1"), bootstrap_pb2.Bootstrap())
        assert not config.static_resources.listeners, pod.name
        assert config.admin.address.socket_address.port_value != PLAN.metrics_port, pod.name


def test_allowed_callers(chart: Rendered) -> None:
    port = grpc_port(chart)
    assert port == APP_PORT  # the port the policies guard is the one the sidecar serves
    policies = by_component(chart.of_kind("AuthorizationPolicy"))
    # The gateway is the edge: no policy in the chart, no RBAC filter in the lab.
    assert set(policies) == set(CHART_MESH.access) == {"orders", "inventory"}
    for pod in PODS:
        listener = inbound_listener(pod)
        [chain] = listener.filter_chains
        manager = connection_manager(chain)
        [host] = manager.route_config.virtual_hosts
        assert {r.route.cluster for r in host.routes} == {sidecar.inbound_cluster_name(port)}
        found = rbac_filters(manager)
        names = [http_filter.name for http_filter in manager.http_filters]
        if pod.service not in policies:
            assert found == [] and names == ["envoy.filters.http.router"], pod.name
            continue
        # One RBAC filter, before the router: a call it denies never reaches the app.
        assert names == ["envoy.filters.http.rbac", "envoy.filters.http.router"], pod.name
        [config] = found
        lab = envoy_access(config)
        expected = chart_access(chart, policies[pod.service], port)
        assert lab == expected, (pod.name, sorted(lab ^ expected))
        # Health is open to any peer on both sides.
        assert (ANY_PEER, ("prefix", "/grpc.health.v1.Health/")) in lab, pod.name


def test_the_pods_identities_are_their_components() -> None:
    # The RBAC above names callers by spiffe id; each pod presents its service's.
    for pod in PODS:
        assert pod.service_account == pod.service
        assert spiffe_id(pod.service_account) == f"spiffe://cluster.local/ns/shop/sa/{pod.service}"
