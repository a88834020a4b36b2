"""A replica with bad configuration stops at once with one clear line, never a traceback.

Kubernetes shows the last lines of a crashing container: that one line must name
the variable and what would have been accepted.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shop.local.addresses import AddressPlan, free_net

from ..support.pods import run_service_module

EXIT_CONFIG_ERROR = 2
PodEnv = Callable[..., dict[str, str]]


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("SHOP_DRAIN_DELAY_S", "abc", "a number of seconds >= 0"),
        ("SHOP_LB_POLICY", "random", "pick_first, round_robin or weighted_round_robin"),
        ("SHOP_LISTEN_ADDR", "nope", "HOST:PORT"),
        ("SHOP_METRICS_ADDR", "9464", "HOST:PORT or 'off'"),
        ("SHOP_RETRY_MAX_ATTEMPTS", "9", "an integer from 1 to 5"),
        ("SHOP_LOG_LEVEL", "loud", "one of debug, info, warning, error"),
        ("DATABASE_URL", "mysql://db/shop", "a database URL"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "otlp, console or none"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "'grpc'"),
    ],
)
def test_bad_value_exits_2_with_one_line(
    variable: str, value: str, allowed: str, pod_env: PodEnv
) -> None:
    env = {variable: value}
    if variable.startswith("OTEL_EXPORTER"):
        env["OTEL_TRACES_EXPORTER"] = "otlp"
    result = run_service_module("shop.orders", pod_env(**env))
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    line = _one_line(result.stderr)
    assert line.startswith("orders: configuration error: ")
    assert f"{variable}=" in line
    assert allowed in line
    assert result.stdout == ""


@pytest.mark.parametrize("service", ["gateway", "inventory"])
def test_every_service_validates_its_config(service: str, pod_env: PodEnv) -> None:
    result = run_service_module(f"shop.{service}", pod_env(SHOP_SHUTDOWN_GRACE_S="-1"))
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "SHOP_SHUTDOWN_GRACE_S='-1'" in _one_line(result.stderr)


@pytest.fixture
def held_port() -> Iterator[str]:
    """A loopback address some other program is listening on."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def test_listen_address_in_use_is_one_clear_line(held_port: str, pod_env: PodEnv) -> None:
    result = run_service_module("shop.orders", pod_env(SHOP_LISTEN_ADDR=held_port))
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    line = _one_line(result.stderr)
    assert f"SHOP_LISTEN_ADDR='{held_port}'" in line
    assert "in use" in line


def test_metrics_address_in_use_is_one_clear_line(held_port: str, pod_env: PodEnv) -> None:
    result = run_service_module("shop.orders", pod_env(SHOP_METRICS_ADDR=held_port))
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    line = _one_line(result.stderr)
    assert f"SHOP_METRICS_ADDR='{held_port}'" in line
    assert "in use" in line


def test_listen_address_not_on_this_host(pod_env: PodEnv) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface.
    result = run_service_module("shop.gateway", pod_env(SHOP_LISTEN_ADDR="192.0.2.1:50051"))
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "SHOP_LISTEN_ADDR='192.0.2.1:50051'" in _one_line(result.stderr)


def test_shop_up_with_port_in_use_fails_clearly(tmp_path: Path) -> None:
    net = free_net()
    plan = AddressPlan(net=net)
    gateway_addr = plan.grpc_addr("gateway", 0)
    host, _, port = gateway_addr.rpartition(":")
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((host, int(port)))
        holder.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "shop.cli.main",
                "up",
                "--net",
                str(net),
                "--orders",
                "1",
                "--inventory",
                "1",
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"shop up: {gateway_addr} is already in use (needed by gateway-0)" in result.stderr
    # It failed before starting anything: no replica wrote a log.
    assert not list((tmp_path / "logs").glob("*.log"))
