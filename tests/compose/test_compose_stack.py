"""docker-compose.yml runs the shop the way the services and the Helm chart expect.

Each test checks one promise against the code that has to keep it: commands parse
with the real ``shop`` parser, every variable is one the services read (and its value
passes their own validation), health checks use ``shop health``, start-up waits for
what each service calls, and the headless settings match the chart's headless mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import opentelemetry.environment_variables as otel_api_env
import opentelemetry.sdk.environment_variables as otel_sdk_env
import pytest

from shop.cli.env import every_setting
from shop.cli.main import build_parser
from shop.cli.serve import SERVICES
from shop.runtime.config import (
    DRAIN_DELAY_S,
    LISTEN_ADDR,
    SHUTDOWN_GRACE_S,
    ChannelConfig,
    ServerConfig,
    database_url,
)

from .compose_model import (
    ROOT,
    SHOP_SERVERS,
    base_compose,
    command_words,
    duration_s,
    environment,
    load_yaml,
    shop_server_names,
    split_host_port,
)

COMPOSE = base_compose()
SERVICES_BY_NAME: dict[str, dict[str, Any]] = COMPOSE["services"]
SERVERS = shop_server_names(COMPOSE)

# What each service calls, and so must be healthy before it starts.
MUST_WAIT_FOR = {
    "gateway": {"orders", "inventory"},
    "orders": {"inventory", "postgres"},
    "inventory": {"postgres"},
    "loadgen": {"gateway"},
    "grafana": {"prometheus"},
}
# Jobs that run once before the servers and exit; servers wait for them to succeed.
ONE_SHOT = {"credentials": "writes the demo issuer and internal keys, then exits"}
# Long-running services that cannot have a healthcheck, and why.
NO_HEALTHCHECK = {
    "otel-collector": "the image is FROM scratch: no shell, no wget or curl to probe with",
}
ALL_SETTINGS = every_setting()
SETTING_NAMES = {setting.name for setting in ALL_SETTINGS}
STANDARD_OTEL_NAMES = {
    name
    for module in (otel_api_env, otel_sdk_env)
    for name in dir(module)
    if name.startswith("OTEL_")
}


def shop_containers() -> dict[str, dict[str, Any]]:
    """Every service built from the project's image: the servers and the load generator."""
    return {
        name: service
        for name, service in SERVICES_BY_NAME.items()
        if service["image"] == SERVICES_BY_NAME["gateway"]["image"]
    }


def test_the_servers_are_the_three_shop_services() -> None:
    assert set(SERVERS) == set(SHOP_SERVERS)
    for compose_name, served in SERVERS.items():
        # The compose name is the DNS name the others dial, so it must be the service's.
        assert compose_name == served


@pytest.mark.parametrize("name", sorted(shop_containers()))
def test_shop_containers_build_the_projects_image(name: str) -> None:
    service = SERVICES_BY_NAME[name]
    build = service["build"]
    context = build if isinstance(build, str) else build["context"]
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context).resolve() == ROOT
    assert (ROOT / context / dockerfile).resolve() == ROOT / "Dockerfile"
    # One tag for all: compose builds it once and every container runs the same code.
    assert service["image"] == "grpc-shop:0.1.0"


@pytest.mark.parametrize("name", SHOP_SERVERS)
def test_server_command_is_shop_serve(name: str) -> None:
    args = build_parser().parse_args(command_words(SERVICES_BY_NAME[name]))
    assert args.command == "serve"
    assert args.service in SERVICES
    assert args.service == name


@pytest.mark.parametrize("name", SHOP_SERVERS)
def test_server_healthcheck_is_shop_health_on_its_own_server(name: str) -> None:
    test = SERVICES_BY_NAME[name]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "shop"], test
    args = build_parser().parse_args(test[2:])
    assert args.command == "health"
    # No target: the probe asks this container's server, at SHOP_LISTEN_ADDR.
    assert args.targets == []


@pytest.mark.parametrize("name", SHOP_SERVERS)
def test_stop_grace_period_covers_drain_and_grace(name: str) -> None:
    service = SERVICES_BY_NAME[name]
    env = environment(service)
    drain = DRAIN_DELAY_S.read(env)
    grace = SHUTDOWN_GRACE_S.read(env)
    # Docker's default is 10 s, shorter than the default drain + grace (15 s).
    assert "stop_grace_period" in service
    assert duration_s(service["stop_grace_period"]) > drain + grace


@pytest.mark.parametrize("name", sorted(shop_containers()))
def test_environment_holds_only_variables_the_services_read(name: str) -> None:
    env = environment(SERVICES_BY_NAME[name])
    unknown = {
        key
        for key in env
        if key not in SETTING_NAMES and not (key.startswith("OTEL_") and key in STANDARD_OTEL_NAMES)
    }
    assert not unknown, f"{name} sets variables no service reads: {sorted(unknown)}"
    # And every value passes the services' own validation (a typo stops a service).
    for setting in ALL_SETTINGS:
        if setting.name in env:
            setting.read(env)


@pytest.mark.parametrize("name", SHOP_SERVERS)
def test_servers_start_with_their_environment(name: str) -> None:
    """The configuration a server builds at start-up from the compose environment."""
    env = environment(SERVICES_BY_NAME[name])
    ServerConfig.from_env(env)
    ChannelConfig.from_env(env)
    if name != "gateway":
        database_url(name, env)


@pytest.mark.parametrize("name", SHOP_SERVERS)
def test_headless_pattern_settings(name: str) -> None:
    env = environment(SERVICES_BY_NAME[name])
    channel = ChannelConfig.from_env(env)
    server = ServerConfig.from_env(env)
    assert server.mode == "headless"
    assert channel.lb_policy == "round_robin"
    assert channel.client_health_check
    # Re-resolution: servers age connections out, clients may resolve again soon.
    assert server.max_connection_age_s > 0
    assert channel.dns_min_reresolution_s <= 5
    _, listen_port = split_host_port(LISTEN_ADDR.default)
    for variable, callee in (
        ("SHOP_ORDERS_TARGET", "orders"),
        ("SHOP_INVENTORY_TARGET", "inventory"),
    ):
        target = env[variable]
        # dns:/// so gRPC gets every replica's address, not the first one.
        assert target.startswith("dns:///"), target
        host, port = split_host_port(target)
        assert host == callee and host in SERVICES_BY_NAME
        callee_listen = environment(SERVICES_BY_NAME[callee]).get("SHOP_LISTEN_ADDR")
        assert port == (split_host_port(callee_listen)[1] if callee_listen else listen_port)


def test_headless_values_match_the_charts_headless_mode() -> None:
    values = load_yaml(ROOT / "helm" / "grpc-shop" / "values.yaml")["headless"]
    env = environment(SERVICES_BY_NAME["orders"])
    assert float(env["SHOP_MAX_CONNECTION_AGE_S"]) == values["maxConnectionAgeSeconds"]
    assert float(env["SHOP_DNS_MIN_RERESOLUTION_S"]) == values["dnsMinReresolutionSeconds"]


def test_orders_and_inventory_run_three_replicas() -> None:
    for name in ("orders", "inventory"):
        service = SERVICES_BY_NAME[name]
        assert service["deploy"]["replicas"] == 3
        # Replicas cannot share a host port; only the gateway is published.
        assert not service.get("ports"), f"{name} publishes ports: {service.get('ports')}"
        assert "container_name" not in service
    assert SERVICES_BY_NAME["gateway"]["ports"] == ["50051:50051"]


@pytest.mark.parametrize("name", sorted(MUST_WAIT_FOR))
def test_services_wait_for_healthy_dependencies(name: str) -> None:
    depends_on = SERVICES_BY_NAME[name]["depends_on"]
    assert isinstance(depends_on, dict), "use the long form, with a condition"
    for dependency in MUST_WAIT_FOR[name]:
        assert depends_on.get(dependency, {}).get("condition") == "service_healthy", (
            f"{name} must wait for {dependency} to be healthy"
        )


def test_dependencies_name_services_that_can_become_healthy() -> None:
    for name, service in SERVICES_BY_NAME.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            if dependency in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, dependency)
                continue
            assert condition in {"service_healthy", "service_started"}, (name, dependency)
            if condition == "service_healthy":
                check = SERVICES_BY_NAME[dependency].get("healthcheck", {})
                assert check and not check.get("disable"), (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES_BY_NAME.items():
        if service.get("profiles") or name in NO_HEALTHCHECK or name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
    for name in NO_HEALTHCHECK:
        assert "healthcheck" not in SERVICES_BY_NAME[name]


def test_orders_and_inventory_use_the_postgres_service() -> None:
    postgres = SERVICES_BY_NAME["postgres"]
    db_env = environment(postgres)
    expected = (
        f"postgresql://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{db_env['POSTGRES_DB']}"
    )
    for name in ("orders", "inventory"):
        assert environment(SERVICES_BY_NAME[name])["DATABASE_URL"] == expected
    assert "DATABASE_URL" not in environment(SERVICES_BY_NAME["gateway"])
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # Data survives `docker compose down` (not `down -v`).
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]


def test_postgres_image_is_the_charts() -> None:
    values = load_yaml(ROOT / "helm" / "grpc-shop" / "values.yaml")
    assert SERVICES_BY_NAME["postgres"]["image"] == values["postgresql"]["image"]


def test_load_generator_targets_every_replica() -> None:
    service = SERVICES_BY_NAME["loadgen"]
    assert service["profiles"] == ["load"]
    args = build_parser().parse_args(command_words(service))
    assert args.command == "load"
    assert args.target == "dns:///gateway:50051"
    assert args.lb_policy == "round_robin"
    assert args.json and args.no_progress
    assert args.duration == 600
    replicas = {
        name: SERVICES_BY_NAME[name].get("deploy", {}).get("replicas", 1)
        for name in ("orders", "inventory")
    }
    assert dict(args.expect) == replicas
    assert service["healthcheck"] == {"disable": True}


def test_credentials_are_made_once_and_mounted_read_only_where_they_are_used() -> None:
    job = SERVICES_BY_NAME["credentials"]
    args = build_parser().parse_args(command_words(job))
    assert (args.command, str(args.out)) == ("keys", "/credentials")
    assert job["restart"] == "no" and job["healthcheck"] == {"disable": True}
    assert job["volumes"] == ["shop-credentials:/credentials"]
    for name in SHOP_SERVERS:
        service = SERVICES_BY_NAME[name]
        assert "shop-credentials:/credentials:ro" in service["volumes"], name
        assert service["depends_on"]["credentials"]["condition"] == (
            "service_completed_successfully"
        )
        env = environment(service)
        # What `shop keys --out /credentials` writes (shop.credentials).
        assert env["SHOP_AUTH_JWKS"] == "/credentials/jwks.json", name
        assert env["SHOP_INTERNAL_KEYS_DIR"] == "/credentials/internal", name
    loadgen = SERVICES_BY_NAME["loadgen"]
    assert "shop-credentials:/credentials:ro" in loadgen["volumes"]
    load_args = build_parser().parse_args(command_words(loadgen))
    assert str(load_args.token_key) == "/credentials/issuer-key.pem"


def test_the_credentials_layout_is_what_shop_keys_writes(tmp_path: Path) -> None:
    from shop.credentials import ensure_credentials

    made = ensure_credentials(tmp_path)
    assert made.jwks == tmp_path / "jwks.json"
    assert made.internal_keys_dir == tmp_path / "internal"
    assert made.issuer_key == tmp_path / "issuer-key.pem"
    assert sorted(p.name for p in made.internal_keys_dir.iterdir()) == ["gateway", "orders"]
