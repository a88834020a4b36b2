"""The registry of balancing modes: one name per set-up, shared with the chart, and
every replica told which mode it runs in (SHOP_MODE), as the chart's pods are."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shop.lab.modes import MODE_NAMES, MODES, LabCluster, Mode, ModeEnv, create_mode
from shop.lab.modes.base import CALLED_SERVICES
from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import ClusterSpec, LocalCluster
from shop.runtime.config import MODE

REPO = Path(__file__).resolve().parents[2]
CLIENT_PODS = [("gateway", 0), ("orders", 0), ("orders", 1)]


def _chart_modes() -> list[str]:
    schema = json.loads((REPO / "helm" / "grpc-shop" / "values.schema.json").read_text())
    modes: list[str] = schema["properties"]["mode"]["enum"]
    return modes


def test_every_chart_mode_is_a_lab_mode_of_the_same_name() -> None:
    assert set(_chart_modes()) <= set(MODE_NAMES)
    assert list(MODES) == list(MODE_NAMES)
    assert all(mode.name == name for name, mode in MODES.items())


def test_names_are_valid_shop_mode_labels() -> None:
    for name in MODE_NAMES:
        assert MODE.read({"SHOP_MODE": name}) == name


def test_an_unknown_mode_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="proxyless"):
        create_mode("nodeport", LabCluster(AddressPlan(net=free_net()), tmp_path))


def test_the_istio_mode_runs_envoy_not_a_stand_in() -> None:
    istio = MODES["istio"]
    assert "Envoy" in istio.description and "HAProxy" not in istio.description
    assert istio.needs_envoy and not istio.needs_haproxy


def test_the_readme_glossary_lists_every_mode() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Modes glossary", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.M)
    assert rows == list(MODE_NAMES)


# A mode started for a small cluster: the mode, the environment it asks for, the cluster.
Started = tuple[Mode, ModeEnv, LabCluster]


@pytest.fixture(params=MODE_NAMES)
async def started(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Started]:
    cluster = LabCluster(AddressPlan(net=free_net()), tmp_path)
    mode = create_mode(request.param, cluster)
    try:
        env = await mode.start()
        yield mode, env, cluster
    finally:
        await mode.close()


async def test_every_replica_runs_with_its_mode_and_a_route_to_each_service(
    started: Started,
) -> None:
    mode, env, lab = started
    spec = ClusterSpec(
        replicas={"gateway": 1, "orders": 2, "inventory": 2},
        plan=lab.plan,
        data_dir=lab.work_dir,
        extra_env=env.common,
        service_env=env.per_service,
        replica_env=env.for_replica,
    )
    cluster = LocalCluster(spec)
    for service, count in spec.replicas.items():
        for index in range(count):
            replica_env = cluster.replica_env(service, index)
            assert replica_env["SHOP_MODE"] == mode.name, (service, index)
            if (service, index) in CLIENT_PODS:
                for called in CALLED_SERVICES:
                    target = replica_env[f"SHOP_{called.upper()}_TARGET"]
                    assert target != cluster.target(called), (service, index, called)


async def test_only_the_charts_headless_ages_connections_out(
    started: Started,
) -> None:
    mode, env, _ = started
    aged = {s: e.get("SHOP_MAX_CONNECTION_AGE_S") for s, e in env.per_service.items()}
    # The chart's headless mode, and its two balancing variants the scenarios run.
    if mode.name in ("headless", "headless-wrr", "headless-outlier"):
        assert aged == {"orders": "2", "inventory": "2"}
        assert env.common["SHOP_DNS_MIN_RERESOLUTION_S"] == "1"
    else:
        assert not any(aged.values())
    if mode.name.startswith("headless"):
        policy = "weighted_round_robin" if mode.name == "headless-wrr" else "round_robin"
        assert env.common["SHOP_LB_POLICY"] == policy
        assert mode.counters().keys() == {"dns_queries"}
