"""NetworkPolicies, on by default, let exactly the shop's own traffic through.

The rendered policies are evaluated the way Kubernetes defines them: a pod selected
by a policy of a type accepts (or sends) only what one of its rules allows; peers
are podSelector (in the policy's namespace), namespaceSelector, or both; a named port
is the destination container's port of that name; no ``ports`` means every port and
no ``from``/``to`` every peer. Each flow the shop needs is checked, and flows it must
not have. Traffic from the node (kubelet probes) is never subject to NetworkPolicy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ..support.chart import ChartRenderer, Rendered

NS = "shop-ns"
GRPC, METRICS = 50051, 9464
SERVICES = ("gateway", "orders", "inventory")
MESH = ("istio", "proxyless")
COLLECTOR = "http://opentelemetry-collector.observability.svc.cluster.local:4317"


@dataclass(frozen=True)
class Endpoint:
    """A pod (or, with namespace None, an address outside any pod, e.g. node-local DNS)."""

    name: str
    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    ports: dict[str, int] = field(default_factory=dict, hash=False)


# What the shop talks to outside its release.
DNS = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
NODE_LOCAL_DNS = Endpoint("node-local-dns", None, {}, {"dns": 53})
ISTIOD = Endpoint("istiod", "istio-system", {"app": "istiod"}, {"grpc-xds": 15012})
COLLECTOR_POD = Endpoint("collector", "observability", {"app": "collector"}, {"otlp": 4317})
PROMETHEUS = Endpoint("prometheus", "monitoring", {"app": "prometheus"})
STRANGER = Endpoint("stranger", NS, {"app": "something-else"})
ADMIN_POD = Endpoint("stock-admin", "ops", {"app": "stock-admin"})
# Identity providers serving a JWKS: one on the internet, one in the cluster.
IDP = Endpoint("idp.example.com", None, {}, {"https": 443})
KEYCLOAK = Endpoint("keycloak", "auth", {"app": "keycloak"}, {"https": 8443})


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if other.namespace is None or "ipBlock" in peer:  # no pod: only "any peer" matches
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], other.labels)


def _port_matches(rule: dict[str, Any], destination: Endpoint, port: int, protocol: str) -> bool:
    if "ports" not in rule:
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None or wanted == port or destination.ports.get(str(wanted)) == port:
            return True
    return False


class Network:
    """The pods of one render and its NetworkPolicies."""

    def __init__(self, rendered: Rendered) -> None:
        self.policies = rendered.of_kind("NetworkPolicy")
        self.pods: dict[str, Endpoint] = {}
        templates = [
            w["spec"]["template"]
            for k in ("Deployment", "StatefulSet")
            for w in rendered.of_kind(k)
        ] + rendered.of_kind("Pod")
        for template in templates:
            labels = template["metadata"]["labels"]
            ports = {
                p["name"]: p["containerPort"]
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            }
            component = labels["app.kubernetes.io/component"]
            self.pods[component] = Endpoint(component, NS, labels, ports)

    def _allowed(
        self, kind: str, pod: Endpoint, other: Endpoint, dst: Endpoint, port: int, protocol: str
    ) -> bool:
        """Whether ``pod``'s policies of ``kind`` let this connection with ``other`` through."""
        selecting = [
            p
            for p in self.policies
            if kind in p["spec"]["policyTypes"]
            and p["metadata"]["namespace"] == pod.namespace
            and _selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True
        key, peers = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        return any(
            _port_matches(rule, dst, port, protocol)
            and (peers not in rule or any(_peer_matches(x, NS, other) for x in rule[peers]))
            for policy in selecting
            for rule in policy["spec"].get(key, [])
        )

    def can(
        self, src: Endpoint | str, dst: Endpoint | str, port: int, protocol: str = "TCP"
    ) -> bool:
        source = self.pods[src] if isinstance(src, str) else src
        target = self.pods[dst] if isinstance(dst, str) else dst
        egress = source.namespace != NS or self._allowed(
            "Egress", source, target, target, port, protocol
        )
        ingress = target.namespace != NS or self._allowed(
            "Ingress", target, source, target, port, protocol
        )
        return egress and ingress


def _network(
    render_chart: ChartRenderer, mode: str, values: dict[str, Any] | None = None
) -> Network:
    base = {"loadgen": {"enabled": True}, "otel": {"endpoint": COLLECTOR}}
    return Network(render_chart(mode, {**base, **(values or {})}))


def test_network_policies_are_on_by_default(mode: str, render_chart: ChartRenderer) -> None:
    rendered = render_chart(mode)
    components = {"gateway", "orders", "inventory", "test", "postgresql"}
    assert rendered.names("NetworkPolicy") == {f"shop-{c}" for c in components}
    assert not render_chart(mode, {"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy")


def test_the_shop_can_make_its_calls(mode: str, render_chart: ChartRenderer) -> None:
    net = _network(render_chart, mode)
    for src, dst in (
        ("loadgen", "gateway"),
        ("gateway", "orders"),
        ("gateway", "inventory"),
        ("orders", "inventory"),
        ("test", "gateway"),
        ("test", "orders"),
        ("test", "inventory"),
    ):
        assert net.can(src, dst, GRPC), (src, dst)
    for component in ("orders", "inventory"):
        assert net.can(component, "postgresql", 5432), component
    for component in net.pods:
        assert net.can(component, DNS, 53, "UDP"), component
        assert net.can(component, DNS, 53, "TCP"), component
    for component in SERVICES:
        assert net.can(component, COLLECTOR_POD, 4317), component
        assert net.can(PROMETHEUS, component, METRICS), component


def test_the_mesh_can_reach_istiod_and_scrape_envoy(mode: str, render_chart: ChartRenderer) -> None:
    net = _network(render_chart, mode)
    mesh = mode in MESH
    for component in (*SERVICES, "loadgen", "test"):
        assert net.can(component, ISTIOD, 15012) == mesh, component
    # A namespace labelled istio-injection gives the database a sidecar in any mode.
    assert net.can("postgresql", ISTIOD, 15012)
    # istio-agent's merged metrics and Envoy's stats; the mode comparison dashboard
    # reads the load generator's sidecar (reporter="source").
    for component in (*SERVICES, "loadgen"):
        for port in (15020, 15090):
            assert net.can(PROMETHEUS, component, port) == mesh, (component, port)
    # The load generator's Envoy sends spans in mode=istio (Telemetry selects it).
    assert net.can("loadgen", COLLECTOR_POD, 4317) == (mode == "istio")


def test_nothing_else_gets_through(mode: str, render_chart: ChartRenderer) -> None:
    net = _network(render_chart, mode)
    for src, dst in (
        ("loadgen", "orders"),
        ("loadgen", "inventory"),
        ("inventory", "orders"),
        ("orders", "gateway"),
        ("inventory", "gateway"),
    ):
        assert not net.can(src, dst, GRPC), (src, dst)
    for src in ("gateway", "loadgen", "test"):
        assert not net.can(src, "postgresql", 5432), src
    for dst in ("orders", "inventory"):
        assert not net.can(STRANGER, dst, GRPC), dst
        assert not net.can(PROMETHEUS, dst, GRPC), dst
        assert not net.can(ADMIN_POD, dst, GRPC), dst
    assert not net.can(STRANGER, "postgresql", 5432)
    # The edge: anyone may call the gateway unless networkPolicy.gatewayFrom narrows it.
    assert net.can(STRANGER, "gateway", GRPC)
    assert not net.can("gateway", COLLECTOR_POD, 443)
    # Nothing calls the load generator or the test pod.
    assert not net.can(STRANGER, "loadgen", GRPC)
    assert not net.can(STRANGER, "test", GRPC)


def test_stock_administration_can_be_let_in(render_chart: ChartRenderer) -> None:
    ops = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
    net = _network(render_chart, "istio", {"networkPolicy": {"stockAdminFrom": [ops]}})
    assert net.can(ADMIN_POD, "inventory", GRPC)
    assert not net.can(ADMIN_POD, "orders", GRPC)
    assert not net.can(ADMIN_POD, "postgresql", 5432)


def test_narrowed_scrapers_and_callers(render_chart: ChartRenderer) -> None:
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    values = {"networkPolicy": {"metricsFrom": [monitoring], "gatewayFrom": [monitoring]}}
    net = _network(render_chart, "istio", values)
    assert net.can(PROMETHEUS, "orders", METRICS)
    assert net.can(PROMETHEUS, "loadgen", 15090)
    assert not net.can(STRANGER, "orders", METRICS)
    assert not net.can(STRANGER, "loadgen", 15090)
    assert not net.can(STRANGER, "gateway", GRPC)
    # The release's own callers of the gateway stay in.
    assert net.can("loadgen", "gateway", GRPC)
    assert net.can("test", "gateway", GRPC)


@pytest.mark.parametrize("mode", ["clusterip", "istio"])
def test_dns_anywhere_for_node_local_caches(mode: str, render_chart: ChartRenderer) -> None:
    assert not _network(render_chart, mode).can("orders", NODE_LOCAL_DNS, 53, "UDP")
    net = _network(render_chart, mode, {"networkPolicy": {"dnsNamespace": ""}})
    for component in net.pods:
        assert net.can(component, NODE_LOCAL_DNS, 53, "UDP"), component
        assert not net.can(component, NODE_LOCAL_DNS, 80), component


def test_token_verifiers_reach_the_identity_provider(
    mode: str, render_chart: ChartRenderer
) -> None:
    assert not _network(render_chart, mode).can("gateway", IDP, 443)  # demo issuer: no need
    own = {"loadgen": {"enabled": True, "tokenSecret": "loadgen-token"}}
    url = {**own, "auth": {"jwksUrl": "https://idp.example.com/certs"}}
    net = _network(render_chart, mode, url)
    for component in ("gateway", "inventory"):  # SHOP_AUTH_JWKS is fetched at start-up
        assert net.can(component, IDP, 443), component
    for component in ("orders", "loadgen", "test", "postgresql"):
        assert not net.can(component, IDP, 443), component
    # The URL's own port is the one opened, to externalEgressTo's peers when set.
    auth_ns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "auth"}}}
    in_cluster = {
        **own,
        "auth": {"jwksUrl": "https://keycloak.auth.svc.cluster.local:8443/realms/shop/certs"},
        "networkPolicy": {"externalEgressTo": [auth_ns]},
    }
    net = _network(render_chart, mode, in_cluster)
    assert net.can("gateway", KEYCLOAK, 8443)
    assert net.can("inventory", KEYCLOAK, 8443)
    assert not net.can("gateway", KEYCLOAK, 443)
    assert not net.can("gateway", IDP, 8443)
