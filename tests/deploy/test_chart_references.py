"""Every name one object uses to find another resolves in the same render.

A cluster would only tell at run time (a client dialling a Service that does not
exist, a probe on a port no container opens, a selector matching no pod); these
checks read the references off the rendered objects and look each one up.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from shop.runtime.config import database_url

from ..support.chart import ChartRenderer, EnvOf, Rendered

NS = "shop-ns"
TARGET = re.compile(r"^(?:(?:dns|xds):///)?(?P<host>[a-z0-9.-]+):(?P<port>\d+)$")


def _full_render(render_chart: ChartRenderer, mode: str, all_features: dict[str, Any]) -> Any:
    return render_chart(mode, all_features)


def _service_by_host(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {
        f"{s['metadata']['name']}.{NS}.svc.cluster.local": s for s in rendered.of_kind("Service")
    }


def _pods(rendered: Rendered) -> list[dict[str, Any]]:
    """Pod templates (and the test pod), with the labels their pods will carry."""
    templates = [
        w["spec"]["template"]
        for kind in ("Deployment", "StatefulSet")
        for w in rendered.of_kind(kind)
    ]
    return templates + rendered.of_kind("Pod")


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_client_targets_name_a_service_and_its_grpc_port(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf, all_features: dict[str, Any]
) -> None:
    rendered = _full_render(render_chart, mode, all_features)
    services = _service_by_host(rendered)
    targets = [
        value
        for deployment in rendered.of_kind("Deployment")
        for name, value in env_of(deployment).items()
        if name.endswith("_TARGET")
    ]
    loadgen = rendered.get("Deployment", "shop-loadgen")["spec"]["template"]["spec"]
    loadgen_target = re.search(r"--target (\S+)", loadgen["containers"][0]["args"][0])
    assert loadgen_target, loadgen["containers"][0]["args"]
    targets.append(loadgen_target[1])
    assert len(targets) == 4
    for target in targets:
        match = TARGET.match(target)
        assert match, target
        service = services.get(match["host"])
        assert service is not None, f"{target}: no Service {match['host']}"
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports["grpc"] == int(match["port"]), target
        # A dns:/// target balances only if DNS returns every pod: a headless Service.
        assert (service["spec"].get("clusterIP") == "None") == target.startswith("dns:")


def test_helm_test_pod_checks_existing_services(mode: str, render_chart: ChartRenderer) -> None:
    rendered = render_chart(mode)
    services = _service_by_host(rendered)
    (pod,) = rendered.of_kind("Pod")
    checked = re.findall(
        r"([a-z0-9.-]+\.svc\.cluster\.local):(\d+)", pod["spec"]["containers"][0]["args"][0]
    )
    assert len(checked) == 3
    for host, port in checked:
        assert {p["name"]: p["port"] for p in services[host]["spec"]["ports"]}["grpc"] == int(port)


def test_service_ports_probes_and_listen_addresses_agree(
    mode: str, render_chart: ChartRenderer, env_of: EnvOf, all_features: dict[str, Any]
) -> None:
    rendered = _full_render(render_chart, mode, all_features)
    pods = _pods(rendered)
    for service in rendered.of_kind("Service"):
        selected = [
            p for p in pods if _selects(service["spec"]["selector"], p["metadata"]["labels"])
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for pod in selected:
            container_ports = {
                p["name"]: p["containerPort"]
                for c in pod["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in container_ports, (service["metadata"]["name"], port)
    for deployment in rendered.of_kind("Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if "ports" not in container:  # the load generator serves nothing
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = env_of(deployment)
        assert env["SHOP_LISTEN_ADDR"] == f"0.0.0.0:{ports['grpc']}"
        assert env["SHOP_METRICS_ADDR"] == f"0.0.0.0:{ports['metrics']}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == ports["grpc"]
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_selectors_match_the_pods_they_mean(
    mode: str, render_chart: ChartRenderer, all_features: dict[str, Any]
) -> None:
    rendered = _full_render(render_chart, mode, all_features)
    pods = _pods(rendered)

    def components(selector: dict[str, str]) -> set[str]:
        return {
            p["metadata"]["labels"]["app.kubernetes.io/component"]
            for p in pods
            if _selects(selector, p["metadata"]["labels"])
        }

    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for obj in rendered.of_kind(kind):
            name = obj["metadata"]["name"]
            key = "podSelector" if kind == "NetworkPolicy" else "selector"
            assert components(obj["spec"][key]["matchLabels"]) == {name.removeprefix("shop-")}
    for obj in rendered.of_kind("NetworkPolicy"):
        for rule in obj["spec"]["ingress"] + obj["spec"]["egress"]:
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer:
                    assert components(peer["podSelector"]["matchLabels"]), (obj, peer)
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["name"] in rendered.names(ref["kind"])
    for deployment in rendered.of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
        assert components(selector) == {deployment["metadata"]["name"].removeprefix("shop-")}


def test_identities_and_hosts_in_mesh_objects_exist(
    render_chart: ChartRenderer, all_features: dict[str, Any]
) -> None:
    rendered = _full_render(render_chart, "istio", all_features)
    accounts = {f"cluster.local/ns/{NS}/sa/{name}" for name in rendered.names("ServiceAccount")}
    for policy in rendered.of_kind("AuthorizationPolicy"):
        for rule in policy["spec"]["rules"]:
            for source in rule.get("from", []):
                assert set(source["source"]["principals"]) <= accounts
    for pod in _pods(rendered):
        account = pod["spec"].get("serviceAccountName")
        assert account is None or account in rendered.names("ServiceAccount")
    hosts = _service_by_host(rendered)
    for rule in rendered.of_kind("DestinationRule"):
        assert rule["spec"]["host"] in hosts
    labels = [p["metadata"]["labels"] for p in _pods(rendered)]
    for kind in ("PeerAuthentication", "Telemetry"):
        (obj,) = rendered.of_kind(kind)
        assert any(_selects(obj["spec"]["selector"]["matchLabels"], pod) for pod in labels)


def test_secret_database_url_reaches_the_database_service(render_chart: ChartRenderer) -> None:
    rendered = render_chart("clusterip")
    secret = rendered.get("Secret", "shop-postgresql")
    url = base64.b64decode(secret["data"]["database-url"]).decode()
    host, port = re.search(r"@([^:/]+):(\d+)/", url).groups()  # type: ignore[union-attr]
    service = _service_by_host(rendered)[host]
    assert {p["port"] for p in service["spec"]["ports"]} == {int(port)}
    statefulset = rendered.get("StatefulSet", "shop-postgresql")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    # The services accept this URL as it is (the scheme is rewritten for asyncpg).
    assert database_url("orders", {"DATABASE_URL": url}).startswith("postgresql://shop:")


def test_service_monitor_port_exists(render_chart: ChartRenderer) -> None:
    rendered = render_chart("clusterip", {"serviceMonitor": {"enabled": True}})
    (monitor,) = rendered.of_kind("ServiceMonitor")
    port = monitor["spec"]["endpoints"][0]["port"]
    selected = [
        s
        for s in rendered.of_kind("Service")
        if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        and s["metadata"]["labels"]["app.kubernetes.io/component"]
        in ("gateway", "orders", "inventory")
    ]
    assert len(selected) == 3
    for service in selected:
        assert port in {p["name"] for p in service["spec"]["ports"]}
