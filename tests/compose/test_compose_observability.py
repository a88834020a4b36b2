"""Prometheus, Grafana and the trace pipeline of the compose stack fit together.

The configuration files are checked by promtool where a real checker exists, and
otherwise against each other and against docker-compose.yml: what a file points at
(a host and port, a data source uid, a folder inside a container) must be what the
other side serves or mounts.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shop.runtime.config import METRICS_ADDR

from .compose_model import (
    COMPOSE_DIR,
    ROOT,
    SHOP_SERVERS,
    base_compose,
    command_words,
    environment,
    flag_value,
    host_path_for,
    load_yaml,
    mount_of,
    split_host_port,
    tool,
)

COMPOSE = base_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus.yml"
COLLECTOR_CONFIG = COMPOSE_DIR / "otel-collector.yaml"
GRAFANA_PROVISIONING = COMPOSE_DIR / "grafana" / "provisioning"
DASHBOARDS = ROOT / "helm" / "grpc-shop" / "dashboards"
RULES = ROOT / "helm" / "grpc-shop" / "rules"


def datasources() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = load_yaml(
        GRAFANA_PROVISIONING / "datasources" / "datasources.yaml"
    )["datasources"]
    return found


def provisioned_uids() -> dict[str, str]:
    """uid -> data source type."""
    return {source["uid"]: source["type"] for source in datasources()}


# --- Prometheus ----------------------------------------------------------------------


def test_prometheus_loads_the_mounted_config_with_exemplars() -> None:
    service = SERVICES["prometheus"]
    words = command_words(service)
    config = flag_value(words, "--config.file")
    assert host_path_for(service, config) == PROMETHEUS_CONFIG
    assert "exemplar-storage" in flag_value(words, "--enable-feature").split(",")
    # A replaced command loses the image's default storage path: keep it explicit.
    assert flag_value(words, "--storage.tsdb.path") == "/prometheus"


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """promtool on a copy whose rule_files point at the host folder that is mounted.

    Inside the container the rules live at the mount target (/etc/prometheus/rules);
    on this machine that path does not exist, and promtool silently accepts a glob
    that matches nothing. So each rule_files glob is rewritten to the host folder the
    compose file mounts there (helm/grpc-shop/rules), which also makes promtool
    check the rule files themselves.
    """
    promtool = tool("promtool", "apt-get install prometheus")
    config = load_yaml(PROMETHEUS_CONFIG)
    service = SERVICES["prometheus"]
    assert mount_of(service, "./helm/grpc-shop/rules").read_only
    host_globs = [str(host_path_for(service, pattern)) for pattern in config["rule_files"]]
    matched: list[Path] = []
    for pattern in host_globs:
        files = list(Path("/").glob(pattern.lstrip("/")))
        assert files, f"rule_files {pattern} matches no file in the mounted folder"
        assert all(RULES in path.parents for path in files)
        matched += files
    config["rule_files"] = host_globs
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(matched)} rule files found" in done.stdout


def test_prometheus_discovers_every_replica_of_every_server() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "5s"
    discovered: set[str] = set()
    _, metrics_port = split_host_port(METRICS_ADDR.default)
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            # A records: Docker's DNS gives one per replica (SRV is not served).
            assert sd["type"] == "A"
            assert sd["port"] == metrics_port
            discovered.update(sd["names"])
    assert discovered == set(SHOP_SERVERS)
    for name in SHOP_SERVERS:
        # Nobody moved /metrics off the default port without telling Prometheus.
        assert "SHOP_METRICS_ADDR" not in environment(SERVICES[name])


# --- Grafana -------------------------------------------------------------------------


def test_datasources_have_fixed_unique_uids() -> None:
    uids = [source["uid"] for source in datasources()]
    assert len(uids) == len(set(uids))
    assert provisioned_uids()["prometheus"] == "prometheus"
    assert provisioned_uids()["jaeger"] == "jaeger"


def test_datasources_point_at_the_compose_services() -> None:
    by_uid = {source["uid"]: source for source in datasources()}
    assert split_host_port(by_uid["prometheus"]["url"]) == ("prometheus", 9090)
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    assert split_host_port(by_uid["jaeger"]["url"]) == ("jaeger", 16686)
    assert "16686:16686" in SERVICES["jaeger"]["ports"]


def test_exemplars_link_to_the_trace_datasource() -> None:
    prometheus = {source["uid"]: source for source in datasources()}["prometheus"]
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations == [{"name": "trace_id", "datasourceUid": "jaeger"}]
    for destination in destinations:
        assert provisioned_uids()[destination["datasourceUid"]] == "jaeger"


def test_grafana_mounts_both_provisioning_folders() -> None:
    service = SERVICES["grafana"]
    for kind in ("datasources", "dashboards"):
        mount = mount_of(service, f"./compose/grafana/provisioning/{kind}")
        assert mount.target == f"/etc/grafana/provisioning/{kind}"
        assert mount.read_only


def test_dashboards_provider_reads_the_charts_dashboards() -> None:
    service = SERVICES["grafana"]
    providers = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "dashboards.yaml")["providers"]
    assert len(providers) == 1
    mount = mount_of(service, "./helm/grpc-shop/dashboards")
    assert mount.read_only
    assert providers[0]["options"]["path"] == mount.target
    # The folder name the chart gives the dashboards too.
    chart_folder = load_yaml(ROOT / "helm" / "grpc-shop" / "values.yaml")["dashboards"]["folder"]
    assert providers[0]["folder"] == chart_folder
    home = environment(service)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path_for(service, home).is_file()


def _datasource_refs(node: Any, where: str = "$") -> list[tuple[str, Any]]:
    """Every `datasource` value in a dashboard (panels, targets, variables, annotations)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and value is not None:
                found.append((f"{where}.{key}", value))
            found.extend(_datasource_refs(value, f"{where}.{key}"))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(_datasource_refs(item, f"{where}[{index}]"))
    return found


_VARIABLE = re.compile(r"^\$\{?(\w+)\}?$")
# Grafana's own pseudo data sources, always there.
_BUILT_IN = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def test_there_are_dashboards_to_provision() -> None:
    assert dashboard_files()


def datasource_problems(dashboard: dict[str, Any], uids: dict[str, str]) -> list[str]:
    """Data source references Grafana could not resolve with the provisioned data sources.

    A reference is fine when it names a provisioned uid (and its type, if given,
    matches), or a ``${var}`` data source variable whose type (its ``query``) is
    the type of a provisioned data source, or one of Grafana's own pseudo sources.
    """
    problems = []
    variables = {
        variable["name"]: variable
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("type") == "datasource"
    }
    for where, ref in _datasource_refs(dashboard):
        uid, kind = (ref.get("uid"), ref.get("type")) if isinstance(ref, dict) else (ref, None)
        if uid in _BUILT_IN or kind in _BUILT_IN:
            continue
        if not isinstance(uid, str):
            problems.append(f"{where}: no uid in {ref!r}")
            continue
        variable = _VARIABLE.match(uid)
        if variable:
            name = variable.group(1)
            if name not in variables:
                problems.append(f"{where}: ${name} is not a data source variable")
                continue
            resolved_type = variables[name].get("query")
            if resolved_type not in uids.values():
                problems.append(f"{where}: ${name} lists {resolved_type!r}: none provisioned")
                continue
        elif uid not in uids:
            problems.append(f"{where}: data source uid {uid!r} is not provisioned")
            continue
        else:
            resolved_type = uids[uid]
        if kind is not None and kind != resolved_type:
            problems.append(f"{where}: type {kind!r}, but the data source is {resolved_type!r}")
    return problems


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.name)
def test_dashboards_use_only_provisioned_datasources(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert datasource_problems(dashboard, provisioned_uids()) == []


def test_the_datasource_check_finds_unresolvable_references() -> None:
    """The check above on dashboards that are wrong in each way it knows of."""
    uids = provisioned_uids()
    variable = {"type": "datasource", "name": "ds", "query": "prometheus"}

    def panel(ref: Any, *variables: dict[str, Any]) -> dict[str, Any]:
        return {"panels": [{"datasource": ref}], "templating": {"list": list(variables)}}

    fine = [
        panel({"type": "prometheus", "uid": "prometheus"}),
        panel({"type": "prometheus", "uid": "${ds}"}, variable),
        panel("$ds", variable),
        panel({"type": "datasource", "uid": "-- Grafana --"}),
    ]
    for dashboard in fine:
        assert datasource_problems(dashboard, uids) == [], dashboard
    wrong = [
        panel({"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}),  # an exported uid
        panel({"type": "loki", "uid": "prometheus"}),
        panel({"type": "prometheus", "uid": "${other}"}, variable),
        panel({"type": "loki", "uid": "${ds}"}, {**variable, "query": "loki"}),
        panel({"type": "prometheus"}),
    ]
    for dashboard in wrong:
        assert len(datasource_problems(dashboard, uids)) == 1, dashboard


# --- traces: services -> collector -> Jaeger -----------------------------------------


def collector_config() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(COLLECTOR_CONFIG)
    return config


def test_collector_loads_the_mounted_config() -> None:
    service = SERVICES["otel-collector"]
    config = flag_value(command_words(service), "--config")
    assert host_path_for(service, config) == COLLECTOR_CONFIG
    assert mount_of(service, "./compose/otel-collector.yaml").read_only


def test_collector_pipelines_name_configured_components() -> None:
    config = collector_config()
    pipelines = config["service"]["pipelines"]
    assert "traces" in pipelines
    for pipeline in pipelines.values():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in config.get(section, {}), f"{section} has no {component}"
    for section in ("receivers", "processors", "exporters", "extensions"):
        used = {c for p in pipelines.values() for c in p.get(section, [])}
        if section == "extensions":
            used = set(config["service"].get("extensions", []))
        unused = set(config.get(section) or {}) - used
        assert not unused, f"{section} configured but not used: {unused}"


def test_collector_exports_to_jaegers_otlp_port() -> None:
    config = collector_config()
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    assert exporters
    for exporter in exporters:
        # `otlp_grpc` since collector v0.144; `otlp` is a deprecated alias there.
        assert exporter.split("/")[0] == "otlp_grpc"
        settings = config["exporters"][exporter]
        host, port = split_host_port(settings["endpoint"])
        assert host == "jaeger" and host in SERVICES
        assert str(port) in SERVICES["jaeger"]["expose"]
        assert settings["tls"]["insecure"] is True
    depends = SERVICES["otel-collector"]["depends_on"]["jaeger"]["condition"]
    assert depends in {"service_started", "service_healthy"}


def test_services_send_spans_to_the_collectors_receiver() -> None:
    endpoint = collector_config()["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    bind_host, receiver_port = split_host_port(endpoint)
    # The default (localhost) would refuse the other containers.
    assert bind_host in {"0.0.0.0", "", "[::]"}
    assert str(receiver_port) in SERVICES["otel-collector"]["expose"]
    for name in SHOP_SERVERS:
        env = environment(SERVICES[name])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")
        assert split_host_port(env["OTEL_EXPORTER_OTLP_ENDPOINT"]) == (
            "otel-collector",
            receiver_port,
        )
