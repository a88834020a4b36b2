"""The variables the chart sets are exactly the ones each service reads.

Not a list kept by hand: each service is started in-process with the chart's own
environment while every read of ``os.environ`` is recorded, so a typo in the chart
(or a variable a service stopped reading) fails here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.cli.env import every_setting
from shop.local.addresses import free_port
from shop.runtime.server import read_config, serve
from shop.runtime.shutdown import ShutdownSignal

from ..support.chart import ChartRenderer, EnvOf, MountVolumes

SERVICES = ("gateway", "orders", "inventory")
SHOP_NAMES = {s.name for s in every_setting()}
# What the project owns: its own settings. OTEL_* belong to the OpenTelemetry SDK,
# which reads many; the chart's must be among those the SDK actually read.
OWN = re.compile(r"^(SHOP_|DATABASE_URL$)")
RECORDED = re.compile(r"^(SHOP_|DATABASE_URL$|OTEL_)")
# Settings the chart sets only when a value switches their feature on (mode=headless's
# weighted_round_robin and outlier detection; test_chart_balancing.py): left unset, the
# service reads the runtime's default, which is off. The "balancing-on" render sets them.
SWITCHED_ON = re.compile(r"^SHOP_(WRR|OUTLIER)_")
# Read by every server, deliberately never set by the chart: fault injection is for the
# lab and chaos experiments, not a value a release should carry.
NOT_FOR_THE_CHART = {"SHOP_FAULT_STATUS"}
# The values of each render: the defaults, trace export on, mode=headless's balancing
# switches on (the other modes ignore headless.*: their render is the defaults').
VARIANTS: dict[str, dict[str, Any]] = {
    "tracing-off": {},
    "tracing-on": {"otel": {"endpoint": "http://collector:4317"}},
    "balancing-on": {
        "headless": {
            "loadBalancingPolicy": "weighted_round_robin",
            "outlierDetection": {"enabled": True},
        },
    },
}


def _local_values(
    chart_env: dict[str, Any], tmp_path: Path, service: str, mounts: dict[str, Path]
) -> dict[str, str]:
    """The chart's environment made runnable on loopback; the *names* stay the same.
    ``mounts``: the pod's Secret volumes, written under tmp_path (paths into them are
    rewritten, so the service reads the very keys the chart would give its pod)."""
    env: dict[str, str] = {}
    for name, value in chart_env.items():
        if isinstance(value, dict):  # valueFrom: a fieldRef or a Secret
            value = f"{service}-0" if name == "SHOP_POD_NAME" else ""
        for mount_path, local in mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                value = str(local) + value[len(mount_path) :]
        env[name] = value
    env["SHOP_LISTEN_ADDR"] = f"127.0.0.1:{free_port()}"
    env["SHOP_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
    env["SHOP_UVLOOP"] = "false"
    env["SHOP_DRAIN_DELAY_S"] = "0"
    if "DATABASE_URL" in env:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path}/{service}.db"
    if "SHOP_SEED_STOCK" in env:
        env["SHOP_SEED_STOCK"] = "10"
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:  # nothing listens there; no span is sent
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    # Kubernetes expands $(VAR) from earlier entries.
    return {k: re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], ""), v) for k, v in env.items()}


@pytest.fixture
def recorded_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Names looked up in os.environ (by our code or a library) while the fixture is on."""
    names: set[str] = set()
    lookup = os._Environ.__getitem__

    def recording_getitem(self: Any, key: str) -> Any:
        names.add(key)
        return lookup(self, key)

    # os._Environ is also what `from os import environ` bound in every library.
    monkeypatch.setattr(os._Environ, "__getitem__", recording_getitem)
    yield names


async def _start_and_stop(service: str) -> None:
    app = importlib.import_module(f"shop.{service}.app")
    config = read_config()
    shutdown = ShutdownSignal()
    task = asyncio.create_task(serve(service, app.setup, config, shutdown))
    try:
        async with grpc.aio.insecure_channel(config.listen_addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30
            )
            assert response.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        shutdown.trigger("test finished")
        await asyncio.wait_for(task, timeout=30)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("variant", VARIANTS)
async def test_chart_env_is_what_the_service_reads(
    mode: str,
    service: str,
    variant: str,
    render_chart: ChartRenderer,
    env_of: EnvOf,
    mount_volumes: MountVolumes,
    recorded_reads: set[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    rendered = render_chart(mode, VARIANTS[variant])
    deployment = rendered.get("Deployment", f"shop-{service}")
    chart_env = env_of(deployment)
    mounts = mount_volumes(rendered, deployment, tmp_path / "pod")
    for name in [n for n in os.environ if RECORDED.match(n)]:
        monkeypatch.delenv(name)
    for name, value in _local_values(chart_env, tmp_path, service, mounts).items():
        monkeypatch.setenv(name, value)
    recorded_reads.clear()

    await _start_and_stop(service)

    read = {n for n in recorded_reads if RECORDED.match(n)}
    chart_names = set(chart_env)
    assert chart_names - read == set(), "the chart sets variables the service never reads"
    own_read = {
        n for n in read if OWN.match(n) and not SWITCHED_ON.match(n) and n not in NOT_FOR_THE_CHART
    }
    assert "SHOP_FAULT_STATUS" in read and "SHOP_FAULT_STATUS" not in chart_names
    assert own_read - chart_names == set(), "the service reads settings the chart leaves unset"
    assert {n for n in chart_names if OWN.match(n)} <= SHOP_NAMES


def test_every_mode_sets_the_same_names(render_chart: ChartRenderer, env_of: EnvOf) -> None:
    for service in SERVICES:
        names = {
            mode: frozenset(env_of(render_chart(mode).get("Deployment", f"shop-{service}")))
            for mode in render_chart.modes
        }
        assert len(set(names.values())) == 1, (service, names)


def test_the_recording_sees_a_typo(
    recorded_reads: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check above can fail: a misspelt variable is set but never read.
    monkeypatch.setenv("SHOP_DRAIN_DELAY_SECONDS", "5")
    recorded_reads.clear()
    config = read_config()
    assert "SHOP_DRAIN_DELAY_S" in recorded_reads
    assert "SHOP_DRAIN_DELAY_SECONDS" not in recorded_reads
    assert dataclasses.asdict(config)["drain_delay_s"] == 5.0
