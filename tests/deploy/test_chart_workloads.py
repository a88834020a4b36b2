"""Deployments, the database, optional blocks and the helm test pod, as rendered."""

from __future__ import annotations

import base64
import json
import math
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support.chart import ChartRenderer, EnvOf, Rendered

SERVICES = ("gateway", "orders", "inventory")


def _pod_spec(rendered: Rendered, component: str) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.get("Deployment", f"shop-{component}")["spec"]["template"][
        "spec"
    ]
    return spec


def test_deployments_are_hardened(mode: str, render_chart: ChartRenderer) -> None:
    rendered = render_chart(mode, {"loadgen": {"enabled": True}})
    for component in (*SERVICES, "loadgen"):
        spec = _pod_spec(rendered, component)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] != 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        # Read-only root: the one writable path is an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert container["resources"]["requests"]["cpu"]


def test_services_use_native_grpc_probes_and_roll_safely(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    rendered = render_chart(mode)
    for component in SERVICES:
        deployment = rendered.get("Deployment", f"shop-{component}")
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["args"] == ["serve", component]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 50051, probe
        # Readiness must notice the drain (NOT_SERVING) well within the drain delay.
        env = env_of(deployment)
        drain, grace = float(env["SHOP_DRAIN_DELAY_S"]), float(env["SHOP_SHUTDOWN_GRACE_S"])
        readiness = container["readinessProbe"]
        assert readiness["periodSeconds"] * readiness["failureThreshold"] < drain
        assert spec["terminationGracePeriodSeconds"] > drain + grace
        strategy = deployment["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        assert deployment["spec"]["replicas"] >= 2


def test_termination_grace_follows_drain_and_grace(render_chart: ChartRenderer) -> None:
    rendered = render_chart("headless", {"drainDelaySeconds": 7.5, "shutdownGraceSeconds": 20})
    spec = _pod_spec(rendered, "orders")
    assert spec["terminationGracePeriodSeconds"] == math.ceil(7.5) + 20 + 5


def test_replicas_per_service(render_chart: ChartRenderer) -> None:
    rendered = render_chart(
        "clusterip",
        {"gateway": {"replicas": 1}, "orders": {"replicas": 4}, "inventory": {"replicas": 5}},
    )
    replicas = {c: rendered.get("Deployment", f"shop-{c}")["spec"]["replicas"] for c in SERVICES}
    assert replicas == {"gateway": 1, "orders": 4, "inventory": 5}


def test_topology_spread_is_optional(render_chart: ChartRenderer) -> None:
    assert "topologySpreadConstraints" not in _pod_spec(render_chart("clusterip"), "orders")
    spec = _pod_spec(render_chart("clusterip", {"topologySpread": {"enabled": True}}), "orders")
    (constraint,) = spec["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "orders"


def test_in_chart_postgresql_with_generated_credentials(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    rendered = render_chart("clusterip")
    statefulset = rendered.get("StatefulSet", "shop-postgresql")
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    secret = rendered.get("Secret", "shop-postgresql")
    password = base64.b64decode(secret["data"]["postgres-password"]).decode()
    url = base64.b64decode(secret["data"]["database-url"]).decode()
    assert len(password) >= 24
    assert (
        url == f"postgresql://shop:{password}@shop-postgresql.shop-ns.svc.cluster.local:5432/shop"
    )
    pg_env = env_of(statefulset)
    assert pg_env["POSTGRES_PASSWORD"] == {
        "secretKeyRef": {"name": "shop-postgresql", "key": "postgres-password"}
    }
    for component in ("orders", "inventory"):
        env = env_of(rendered.get("Deployment", f"shop-{component}"))
        assert env["DATABASE_URL"] == {
            "secretKeyRef": {"name": "shop-postgresql", "key": "database-url"}
        }
    assert "DATABASE_URL" not in env_of(rendered.get("Deployment", "shop-gateway"))


def test_external_database_from_an_existing_secret(
    render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    rendered = render_chart(
        "headless",
        {
            "postgresql": {"enabled": False},
            "externalDatabase": {"existingSecret": "shop-db", "existingSecretKey": "url"},
        },
    )
    assert not rendered.of_kind("StatefulSet")
    # No database Secret; only the authentication ones (test_chart_auth.py) remain.
    assert rendered.names("Secret") == {"shop-demo-issuer", "shop-internal-keys"}
    env = env_of(rendered.get("Deployment", "shop-inventory"))
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "shop-db", "key": "url"}}


def test_no_credential_is_a_plain_value(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    rendered = render_chart(mode, {"loadgen": {"enabled": True}})
    for kind in ("Deployment", "StatefulSet"):
        for obj in rendered.of_kind(kind):
            for name, value in env_of(obj).items():
                if "PASSWORD" in name or name == "DATABASE_URL":
                    assert isinstance(value, dict) and "secretKeyRef" in value, name


def test_pod_disruption_budgets(render_chart: ChartRenderer) -> None:
    assert not render_chart("clusterip").of_kind("PodDisruptionBudget")
    rendered = render_chart("clusterip", {"podDisruptionBudget": {"enabled": True}})
    for component in SERVICES:
        pdb = rendered.get("PodDisruptionBudget", f"shop-{component}")
        assert pdb["spec"]["maxUnavailable"] == 1
        deployment = rendered.get("Deployment", f"shop-{component}")
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_autoscaling_takes_over_replicas(render_chart: ChartRenderer) -> None:
    assert not render_chart("clusterip").of_kind("HorizontalPodAutoscaler")
    rendered = render_chart(
        "clusterip", {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9}}
    )
    for component in SERVICES:
        hpa = rendered.get("HorizontalPodAutoscaler", f"shop-{component}")
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"shop-{component}"
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
        # Left to the autoscaler, or every upgrade would reset the scale.
        assert "replicas" not in rendered.get("Deployment", f"shop-{component}")["spec"]


def test_autoscaling_bounds_must_be_ordered(render_chart: ChartRenderer) -> None:
    with pytest.raises(Exception, match=r"minReplicas \(5\) must not exceed.*maxReplicas \(2\)"):
        render_chart(
            "clusterip", {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}
        )


def _peers(rule: dict[str, Any]) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in rule.get("from", rule.get("to", []))
        if "podSelector" in peer
    }


def test_network_policies_are_least_privilege(mode: str, render_chart: ChartRenderer) -> None:
    # On by default (test_chart_network.py checks the flows they let through).
    rendered = render_chart(mode, {"loadgen": {"enabled": True}})
    policies = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("NetworkPolicy")}
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]

    def grpc_ingress(component: str) -> dict[str, Any]:
        rules: list[dict[str, Any]] = policies[f"shop-{component}"]["ingress"]
        (rule,) = [r for r in rules if r["ports"][0]["port"] == "grpc"]
        return rule

    def grpc_egress(component: str) -> set[str]:
        return {
            callee
            for rule in policies[f"shop-{component}"]["egress"]
            if rule.get("ports", [{}])[0].get("port") == 50051
            for callee in _peers(rule)
        }

    assert "from" not in grpc_ingress("gateway")  # the edge: anyone, unless narrowed
    assert _peers(grpc_ingress("orders")) == {"gateway", "test"}
    assert _peers(grpc_ingress("inventory")) == {"gateway", "orders", "test"}
    assert grpc_egress("gateway") == {"orders", "inventory"}
    assert grpc_egress("orders") == {"inventory"}
    assert grpc_egress("inventory") == set()
    assert grpc_egress("loadgen") == {"gateway"}
    (db_ingress,) = policies["shop-postgresql"]["ingress"]
    assert _peers(db_ingress) == {"orders", "inventory"}
    istiod = [
        rule
        for rule in policies["shop-orders"]["egress"]
        if rule.get("ports", [{}])[0].get("port") == 15012
    ]
    assert bool(istiod) == (mode in ("istio", "proxyless"))


def test_network_policy_narrows_the_gateway_when_asked(render_chart: ChartRenderer) -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    rendered = render_chart("clusterip", {"networkPolicy": {"gatewayFrom": [peer]}})
    rules = rendered.get("NetworkPolicy", "shop-gateway")["spec"]["ingress"]
    # The given peers, and the release's own callers, which must keep working.
    assert rules[0]["from"][0] == peer
    assert _peers(rules[0]) == {"loadgen", "test"}


def test_service_monitor_or_scrape_annotations(render_chart: ChartRenderer) -> None:
    plain = render_chart("clusterip")
    annotations = plain.get("Deployment", "shop-orders")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    assert not plain.of_kind("ServiceMonitor")

    monitored = render_chart(
        "headless", {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prom"}}}
    )
    template = monitored.get("Deployment", "shop-orders")["spec"]["template"]["metadata"]
    assert "prometheus.io/scrape" not in template.get("annotations", {})
    (monitor,) = monitored.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The dashboards' service/pod labels come from shop_instance_info, not the target.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    # Every shop Service is selected, and the headless twins are dropped (scraped once).
    selector = monitor["spec"]["selector"]
    selected = [
        s
        for s in monitored.of_kind("Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector["matchLabels"].items())
        and s["metadata"]["labels"]["app.kubernetes.io/component"]
        in selector["matchExpressions"][0]["values"]
    ]
    assert {s["metadata"]["name"] for s in selected} >= {"shop-orders", "shop-orders-headless"}
    drop = monitor["spec"]["endpoints"][0]["relabelings"][0]
    assert drop["action"] == "drop" and drop["regex"] == ".*-headless"


def test_prometheus_rule_carries_the_rule_files(
    render_chart: ChartRenderer, chart_dir: Path
) -> None:
    assert not render_chart("clusterip").of_kind("PrometheusRule")
    rendered = render_chart(
        "clusterip", {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prom"}}}
    )
    (rule,) = rendered.of_kind("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prom"
    expected = [
        group
        for path in sorted((chart_dir / "rules").glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert expected, "the chart ships rule files"
    # Exactly the file's groups: the alerts' own {{ $labels }} templates survive Helm.
    assert rule["spec"]["groups"] == expected
    assert any("{{ $labels." in str(g) for g in rule["spec"]["groups"])


def test_dashboards_configmap_carries_every_dashboard(
    render_chart: ChartRenderer, chart_dir: Path
) -> None:
    files = sorted(p.name for p in (chart_dir / "dashboards").glob("*.json"))
    assert files, "the chart ships dashboards"
    assert not render_chart("clusterip").of_kind("ConfigMap")
    rendered = render_chart("clusterip", {"dashboards": {"enabled": True}})
    (configmap,) = rendered.of_kind("ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(configmap["data"]) == files
    for name in files:
        assert json.loads(configmap["data"][name]) == json.loads(
            (chart_dir / "dashboards" / name).read_text()
        )


def test_load_generator_runs_shop_load_the_way_the_mode_says(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    assert "shop-loadgen" not in render_chart(mode).names("Deployment")
    rendered = render_chart(mode, {"loadgen": {"enabled": True, "concurrency": 12}})
    container = _pod_spec(rendered, "loadgen")["containers"][0]
    words = shlex.split(container["args"][0])
    start = words.index("shop")
    assert words[start : start + 2] == ["shop", "load"]
    flags = dict(zip(words[start + 2 :: 2], words[start + 3 :: 2], strict=False))
    gateway_env = env_of(rendered.get("Deployment", "shop-gateway"))
    assert flags["--lb-policy"] == gateway_env["SHOP_LB_POLICY"]
    assert flags["--concurrency"] == "12"
    target = flags["--target"]
    assert "shop-gateway" in target
    # Same shape of target as the services use between themselves.
    assert target.split("shop-")[0] == gateway_env["SHOP_ORDERS_TARGET"].split("shop-")[0]


def test_load_generator_flags_exist(render_chart: ChartRenderer) -> None:
    # Every flag the chart passes is one `shop load` accepts.
    from shop.cli.main import build_parser

    container = _pod_spec(render_chart("headless", {"loadgen": {"enabled": True}}), "loadgen")[
        "containers"
    ][0]
    words = shlex.split(container["args"][0])
    command = words[words.index("shop") + 1 : words.index("||")]
    args = build_parser().parse_args(command)
    assert args.command == "load"
    assert args.expect == [("orders", 3), ("inventory", 3)]


def test_otel_endpoint_setting(mode: str, render_chart: ChartRenderer, env_of: EnvOf) -> None:
    env = env_of(render_chart(mode).get("Deployment", "shop-orders"))
    assert env["OTEL_TRACES_EXPORTER"] == "none"
    endpoint = "http://collector.observability.svc.cluster.local:4317"
    env = env_of(
        render_chart(mode, {"otel": {"endpoint": endpoint}}).get("Deployment", "shop-orders")
    )
    assert "OTEL_TRACES_EXPORTER" not in env
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    assert f"shop.mode={mode}" in env["OTEL_RESOURCE_ATTRIBUTES"]


def test_helm_test_pod_checks_every_service(mode: str, render_chart: ChartRenderer) -> None:
    rendered = render_chart(mode)
    (pod,) = rendered.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    words = shlex.split(pod["spec"]["containers"][0]["args"][0])
    start = words.index("shop")
    assert words[start : start + 2] == ["shop", "health"]
    checked = [w.rstrip(";") for w in words if w.rstrip(";").endswith(":50051")]
    assert checked == [f"shop-{c}.shop-ns.svc.cluster.local:50051" for c in SERVICES]
    injected = pod["metadata"]["labels"]["sidecar.istio.io/inject"]
    # Out of the mesh, except where STRICT mTLS makes a sidecar the only way in.
    assert injected == ("true" if mode == "istio" else "false")
    assert ("quitquitquit" in pod["spec"]["containers"][0]["args"][0]) == (mode == "istio")


def test_notes_explain_how_to_reach_the_gateway(mode: str, render_chart: ChartRenderer) -> None:
    notes = render_chart(mode, {"dashboards": {"enabled": True}}).notes
    assert f"mode={mode}" in notes
    assert "port-forward svc/shop-gateway 50051:50051" in notes
    assert "helm test shop" in notes
    assert "grafana_dashboard=1" in notes
