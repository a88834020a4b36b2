"""What each mode configures, read off the rendered objects (the README's mode table)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from ..support.chart import ChartRenderer, EnvOf, Rendered

SERVICES = ("gateway", "orders", "inventory")
NS = "shop-ns"
PROXY_CONFIG = "proxy.istio.io/config"
# Envoy stat names (before tag extraction, which is what Envoy's stats matcher sees) of
# the three stats the mode-comparison dashboard's mesh row reads, for outbound clusters
# in Istio's form outbound|<port>|<subset>|<host>: mode=istio's sidecars must keep them.
KEPT_STATS = [
    f"cluster.{cluster}.{stat}"
    for cluster in (
        "outbound|50051||orders.shop.svc.cluster.local",
        f"outbound|50051||shop-gateway.{NS}.svc.cluster.local",
        f"outbound|50051||shop-inventory.{NS}.svc.cluster.local",
        f"outbound|50051|v1|shop-orders.{NS}.svc.cluster.local",
    )
    for stat in ("upstream_rq_total", "upstream_rq_retry", "outlier_detection.ejections_active")
]
# ... and nothing else: other clusters (Istio's own, inbound), other stats of the same
# clusters, and stats that merely end the same way.
DROPPED_STATS = [
    "cluster.xds-grpc.upstream_cx_total",
    "cluster.xds-grpc.upstream_rq_total",
    "cluster.inbound|50051||.upstream_rq_total",
    "cluster.BlackHoleCluster.upstream_rq_total",
    "cluster.PassthroughCluster.upstream_rq_retry",
    "cluster.outbound|50051||orders.shop.svc.cluster.local.upstream_cx_total",
    "cluster.outbound|50051||orders.shop.svc.cluster.local.upstream_rq_retry_success",
    "cluster.outbound|50051||orders.shop.svc.cluster.local.upstream_rq_retry_overflow",
    "cluster.outbound|50051||orders.shop.svc.cluster.local.upstream_rq_timeout",
    "cluster.outbound|50051||orders.shop.svc.cluster.local.upstream_rq_200",
    "cluster.outbound|50051||orders.shop.svc.cluster.local.outlier_detection.ejections_total",
    "cluster.outbound|50051||orders.shop.svc.cluster.local.circuit_breakers.default.rq_open",
    "cluster_manager.cluster_added",
    "http.inbound_0.0.0.0_50051.downstream_rq_total",
    "listener.0.0.0.0_15006.downstream_cx_total",
    "server.live",
]


def _host(component: str) -> str:
    return f"shop-{component}.{NS}.svc.cluster.local"


def _pod_template(rendered: Rendered, component: str) -> dict[str, Any]:
    template: dict[str, Any] = rendered.get("Deployment", f"shop-{component}")["spec"]["template"]
    return template


@pytest.mark.parametrize(
    ("mode", "target", "lb_policy"),
    [
        ("clusterip", "{host}:50051", "pick_first"),
        ("headless", "dns:///shop-{c}-headless.shop-ns.svc.cluster.local:50051", "round_robin"),
        ("istio", "{host}:50051", "pick_first"),
        ("proxyless", "xds:///{host}:50051", "round_robin"),
    ],
)
def test_client_targets_and_policy(
    mode: str, target: str, lb_policy: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    rendered = render_chart(mode)
    gateway = env_of(rendered.get("Deployment", "shop-gateway"))
    orders = env_of(rendered.get("Deployment", "shop-orders"))
    for component, env in (("orders", gateway), ("inventory", gateway), ("inventory", orders)):
        expected = target.format(host=_host(component), c=component)
        assert env[f"SHOP_{component.upper()}_TARGET"] == expected
    for component in SERVICES:
        assert env_of(rendered.get("Deployment", f"shop-{component}"))["SHOP_LB_POLICY"] == (
            lb_policy
        )


def test_clusterip_mode_is_the_naive_setup(render_chart: ChartRenderer, env_of: EnvOf) -> None:
    rendered = render_chart("clusterip")
    assert rendered.names("Service") == {f"shop-{c}" for c in (*SERVICES, "postgresql")}
    for component in SERVICES:
        service = rendered.get("Service", f"shop-{component}")
        assert service["spec"]["type"] == "ClusterIP"
        assert "clusterIP" not in service["spec"]
        env = env_of(rendered.get("Deployment", f"shop-{component}"))
        assert env["SHOP_MAX_CONNECTION_AGE_S"] == "0"
    assert not rendered.of_kind("DestinationRule")


def test_headless_mode_ages_connections_and_reresolves_fast(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    rendered = render_chart(
        "headless",
        {"headless": {"maxConnectionAgeSeconds": 20, "dnsMinReresolutionSeconds": 2}},
    )
    for component in SERVICES:
        headless = rendered.get("Service", f"shop-{component}-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert (
            headless["spec"]["selector"]
            == (rendered.get("Service", f"shop-{component}")["spec"]["selector"])
        )
        env = env_of(rendered.get("Deployment", f"shop-{component}"))
        assert env["SHOP_MAX_CONNECTION_AGE_S"] == "20"
        assert float(env["SHOP_MAX_CONNECTION_AGE_GRACE_S"]) > 0
        assert env["SHOP_DNS_MIN_RERESOLUTION_S"] == "2"
        assert env["SHOP_CLIENT_HEALTH_CHECK"] == "true"
    # Servers age connections only where clients can re-resolve: not in other modes.
    for mode in ("clusterip", "istio", "proxyless"):
        env = env_of(render_chart(mode).get("Deployment", "shop-orders"))
        assert env["SHOP_MAX_CONNECTION_AGE_S"] == "0", mode
        assert env["SHOP_CLIENT_HEALTH_CHECK"] == "false", mode


def test_istio_mode_mesh_resources(render_chart: ChartRenderer) -> None:
    rendered = render_chart("istio")
    for component in SERVICES:
        service = rendered.get("Service", f"shop-{component}")
        # A headless Service would make Istio ignore the DestinationRule's balancing.
        assert "clusterIP" not in service["spec"]
        labels = _pod_template(rendered, component)["metadata"]["labels"]
        assert labels["sidecar.istio.io/inject"] == "true"
        rule = rendered.get("DestinationRule", f"shop-{component}")
        assert rule["spec"]["host"] == _host(component)
        policy = rule["spec"]["trafficPolicy"]
        assert policy["loadBalancer"]["simple"] == "LEAST_REQUEST"
        assert policy["loadBalancer"]["warmupDurationSecs"] == "30s"
        assert policy["outlierDetection"]["consecutive5xxErrors"] == 5
    peer = rendered.get("PeerAuthentication", "shop")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    # Prometheus scrapes the metrics port without a mesh certificate.
    assert peer["spec"]["portLevelMtls"] == {"9464": {"mode": "PERMISSIVE"}}
    telemetry = rendered.get("Telemetry", "shop")
    assert telemetry["spec"]["tracing"][0]["providers"] == [{"name": "otel-tracing"}]


def _proxy_configs(rendered: Rendered) -> dict[str, Any]:
    """component -> its pods' proxy.istio.io/config, parsed as Istio does (YAML, of
    which JSON is a part), for every pod template that carries one."""
    found = {}
    for kind in ("Deployment", "StatefulSet"):
        for workload in rendered.of_kind(kind):
            meta = workload["spec"]["template"]["metadata"]
            if PROXY_CONFIG in meta.get("annotations", {}):
                component = meta["labels"]["app.kubernetes.io/component"]
                found[component] = yaml.safe_load(meta["annotations"][PROXY_CONFIG])
    return found


def test_istio_mode_keeps_envoys_cluster_stats(render_chart: ChartRenderer) -> None:
    """Istio's default stats matcher drops Envoy's outbound cluster stats; the services'
    and the load generator's sidecars ask for the three the dashboard reads."""
    rendered = render_chart("istio", {"loadgen": {"enabled": True}})
    configs = _proxy_configs(rendered)
    assert configs.keys() == {*SERVICES, "loadgen"}
    for component in configs:
        text = _pod_template(rendered, component)["metadata"]["annotations"][PROXY_CONFIG]
        assert json.loads(text) == configs[component], f"{component}: not plain JSON"
    assert len({json.dumps(c, sort_keys=True) for c in configs.values()}) == 1
    config = configs["gateway"]
    assert config.keys() == {"proxyStatsMatcher"}, "nothing else of ProxyConfig changes"
    assert config["proxyStatsMatcher"].keys() == {"inclusionRegexps"}
    regexps = config["proxyStatsMatcher"]["inclusionRegexps"]
    assert regexps and all(isinstance(r, str) for r in regexps)
    for regex in regexps:
        # Istio writes each into a JSON string of Envoy's bootstrap with Go's `js`
        # escaping, which turns ' into \' (not JSON); Envoy compiles it with RE2, which
        # has no lookaround or backreferences. Python's re reads this subset the same.
        assert not set(regex) & set("\\'\""), regex
        assert "(?" not in regex, regex
    compiled = [re.compile(r) for r in regexps]

    def kept(stat: str) -> bool:
        # Envoy's safe_regex matches the whole stat name.
        return any(r.fullmatch(stat) for r in compiled)

    assert [s for s in KEPT_STATS if not kept(s)] == []
    assert [s for s in DROPPED_STATS if kept(s)] == []


@pytest.mark.parametrize("mode", ["clusterip", "headless", "proxyless"])
def test_other_modes_leave_envoys_stats_alone(mode: str, render_chart: ChartRenderer) -> None:
    rendered = render_chart(mode, {"loadgen": {"enabled": True}})
    configs = _proxy_configs(rendered)
    for config in configs.values():
        assert "proxyStatsMatcher" not in config, mode
    (test_pod,) = rendered.of_kind("Pod")
    assert "proxyStatsMatcher" not in test_pod["metadata"]["annotations"].get(PROXY_CONFIG, "")
    # Without a sidecar there is nothing to configure; proxyless keeps only its agent's.
    if mode == "proxyless":
        assert set(configs) == {*SERVICES, "loadgen"}
        assert all(c == {"holdApplicationUntilProxyStarts": True} for c in configs.values())
    else:
        assert configs == {}


def _grants(policy: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(caller, port) -> the paths its rules allow; caller "*" for rules without ``from``
    and a path "*" for rules that name no paths."""
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in policy["spec"]["rules"]:
        callers = [
            principal.removeprefix(f"cluster.local/ns/{NS}/sa/")
            for source in rule.get("from", [])
            for principal in source["source"]["principals"]
        ] or ["*"]
        for target in rule["to"]:
            operation = target["operation"]
            for caller in callers:
                for port in operation["ports"]:
                    grants.setdefault((caller, port), set()).update(operation.get("paths", ["*"]))
    return grants


def test_istio_authorization_grants_methods_per_caller(render_chart: ChartRenderer) -> None:
    # Per method, not just per caller: each identity gets exactly the calls it makes.
    rendered = render_chart("istio")
    health = {"/grpc.health.v1.Health/*"}
    expected = {
        "orders": {
            ("shop-gateway", "50051"): {"/shop.v1.Orders/*"},
            ("*", "50051"): health,
            ("*", "9464"): {"*"},
        },
        "inventory": {
            ("shop-orders", "50051"): {
                "/shop.v1.Inventory/Reserve",
                "/shop.v1.Inventory/Release",
                "/shop.v1.Inventory/ListProducts",
            },
            ("shop-gateway", "50051"): {"/shop.v1.Inventory/ListProducts"},
            ("*", "50051"): health,
            ("*", "9464"): {"*"},
        },
    }
    assert rendered.names("AuthorizationPolicy") == {f"shop-{c}" for c in expected}
    for component, grants in expected.items():
        policy = rendered.get("AuthorizationPolicy", f"shop-{component}")
        assert policy["spec"]["action"] == "ALLOW"
        assert policy["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
            component
        )
        assert _grants(policy) == grants, component
    # Identities exist: each workload runs as its own ServiceAccount.
    for component in SERVICES:
        spec = _pod_template(rendered, component)["spec"]
        assert spec["serviceAccountName"] == f"shop-{component}"
        assert f"shop-{component}" in rendered.names("ServiceAccount")
    (test_pod,) = rendered.of_kind("Pod")
    assert test_pod["spec"]["serviceAccountName"] == "shop-test"


def test_proxyless_mode_uses_the_grpc_agent(render_chart: ChartRenderer) -> None:
    rendered = render_chart("proxyless")
    for component in SERVICES:
        template = _pod_template(rendered, component)
        assert template["metadata"]["annotations"]["inject.istio.io/templates"] == "grpc-agent"
        assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
        assert rendered.get("Service", f"shop-{component}")["spec"]["type"] == "ClusterIP"
        # gRPC's xDS client supports ROUND_ROBIN, not Envoy's LEAST_REQUEST default.
        rule = rendered.get("DestinationRule", f"shop-{component}")
        assert rule["spec"]["trafficPolicy"]["loadBalancer"]["simple"] == "ROUND_ROBIN"
    assert not rendered.of_kind("PeerAuthentication")
    assert not rendered.of_kind("AuthorizationPolicy")


@pytest.mark.parametrize("mode", ["clusterip", "headless"])
def test_non_mesh_modes_stay_out_of_the_mesh(mode: str, render_chart: ChartRenderer) -> None:
    rendered = render_chart(mode, {"loadgen": {"enabled": True}})
    for component in (*SERVICES, "loadgen"):
        template = _pod_template(rendered, component)
        assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
        assert "inject.istio.io/templates" not in template["metadata"].get("annotations", {})
    for kind in ("DestinationRule", "PeerAuthentication", "AuthorizationPolicy", "Telemetry"):
        assert not rendered.of_kind(kind), kind


def test_every_service_port_is_named_grpc(mode: str, render_chart: ChartRenderer) -> None:
    rendered = render_chart(mode)
    for service in rendered.of_kind("Service"):
        if service["metadata"]["labels"]["app.kubernetes.io/component"] == "postgresql":
            continue
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["grpc"]["appProtocol"] == "grpc"
        assert ports["grpc"]["port"] == 50051
        assert ports["metrics"]["port"] == 9464  # separate from gRPC


def test_switching_modes_is_a_plain_upgrade(render_chart: ChartRenderer) -> None:
    # Fields Kubernetes refuses to change on update must not depend on the mode,
    # or `helm upgrade --set mode=...` fails half-way.
    renders = {m: render_chart(m, {"loadgen": {"enabled": True}}) for m in render_chart.modes}
    for kind, path in (
        ("Deployment", ("spec", "selector")),
        ("StatefulSet", ("spec", "selector")),
        ("StatefulSet", ("spec", "volumeClaimTemplates")),
        ("Service", ("spec", "clusterIP")),
        ("Service", ("spec", "type")),
    ):
        by_name: dict[str, set[str]] = {}
        for rendered in renders.values():
            for obj in rendered.of_kind(kind):
                value: Any = obj
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                by_name.setdefault(obj["metadata"]["name"], set()).add(repr(value))
        changing = {name: values for name, values in by_name.items() if len(values) > 1}
        assert not changing, f"{kind} {'.'.join(path)} differs between modes: {changing}"
