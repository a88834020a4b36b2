"""The L7-proxy pattern: docker-compose.proxy.yml over the base file, and HAProxy.

The merged stack is read as compose builds it (``docker-compose config`` on both
files); compose/haproxy.cfg is checked by the real haproxy binary (``haproxy -c``),
and its hand-encoded gRPC health check is run against a real gRPC health server on
loopback: SERVING must bring a server up, NOT_SERVING must take it down.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shop.local.addresses import free_port
from shop.runtime.config import ChannelConfig, ServerConfig

from ..support.waiting import process_exited, wait_until_async
from .compose_model import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    PROXY_FILE,
    SHOP_SERVERS,
    environment,
    host_path_for,
    merged_compose,
    split_host_port,
    tool,
)

HAPROXY_CONFIG = COMPOSE_DIR / "haproxy.cfg"


def haproxy() -> str:
    return tool("haproxy", "apt-get install haproxy")


@dataclass
class Section:
    kind: str
    name: str
    lines: list[str]

    def starting(self, *words: str) -> list[list[str]]:
        """The section's lines that start with these words, split into words."""
        found = []
        for line in self.lines:
            parts = line.split()
            if parts[: len(words)] == list(words):
                found.append(parts)
        return found


def parse_haproxy(text: str) -> dict[tuple[str, str], Section]:
    sections: dict[tuple[str, str], Section] = {}
    current: Section | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[0].isspace():
            kind, *name = line.split()
            current = Section(kind, name[0] if name else "", [])
            sections[(kind, current.name)] = current
        else:
            assert current is not None, raw
            current.lines.append(line.strip())
    return sections


HAPROXY = parse_haproxy(HAPROXY_CONFIG.read_text())


def frontend_for_port(port: int) -> Section:
    for (kind, _), section in HAPROXY.items():
        if kind != "frontend":
            continue
        for bind in section.starting("bind"):
            if split_host_port(bind[1])[1] == port:
                return section
    raise AssertionError(f"no frontend binds port {port}")


@pytest.fixture(scope="module")
def proxy_stack() -> dict[str, Any]:
    return merged_compose(COMPOSE_FILE, PROXY_FILE)


# --- haproxy.cfg ---------------------------------------------------------------------


def test_haproxy_accepts_the_config() -> None:
    done = subprocess.run(
        [haproxy(), "-c", "-f", str(HAPROXY_CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_haproxy_balances_http2_calls() -> None:
    defaults = HAPROXY[("defaults", "")]
    assert ["mode", "http"] in defaults.starting("mode")
    for service in ("orders", "inventory"):
        frontend = HAPROXY[("frontend", service)]
        assert all(
            "h2" in bind[bind.index("proto") + 1 :][:1] for bind in frontend.starting("bind")
        )
        assert frontend.starting("default_backend") == [["default_backend", service]]


@pytest.mark.parametrize("service", ["orders", "inventory"])
def test_backends_discover_replicas_through_docker_dns(service: str) -> None:
    resolvers = HAPROXY[("resolvers", "docker")]
    assert [words[2] for words in resolvers.starting("nameserver")] == ["127.0.0.11:53"]
    backend = HAPROXY[("backend", service)]
    (template,) = backend.starting("server-template")
    assert split_host_port(template[3]) == (service, 50051)
    options = template[4:]
    assert options[options.index("resolvers") + 1] == "docker"
    # Starts before any replica resolves (they start after HAProxy is healthy).
    assert options[options.index("init-addr") + 1] == "none"
    assert options[options.index("proto") + 1] == "h2"
    assert "check" in options


def test_haproxy_container_loads_the_config(proxy_stack: dict[str, Any]) -> None:
    service = proxy_stack["services"]["haproxy"]
    assert service["image"].startswith("haproxy:2.")
    assert host_path_for(service, "/usr/local/etc/haproxy/haproxy.cfg") == HAPROXY_CONFIG
    assert "healthcheck" in service


# --- clients in the proxy pattern ----------------------------------------------------


@pytest.mark.parametrize("name", SHOP_SERVERS)
def test_proxy_pattern_settings(name: str, proxy_stack: dict[str, Any]) -> None:
    env = environment(proxy_stack["services"][name])
    server = ServerConfig.from_env(env)
    channel = ChannelConfig.from_env(env)
    assert server.mode == "proxy"
    # The proxy balances; a client keeps one connection and no aging is needed.
    assert channel.lb_policy == "pick_first"
    assert server.max_connection_age_s == 0
    for variable, callee in (
        ("SHOP_ORDERS_TARGET", "orders"),
        ("SHOP_INVENTORY_TARGET", "inventory"),
    ):
        host, port = split_host_port(env[variable])
        assert host == "haproxy"
        frontend = frontend_for_port(port)
        (backend,) = frontend.starting("default_backend")
        (template,) = HAPROXY[("backend", backend[1])].starting("server-template")
        assert split_host_port(template[3])[0] == callee, f"{variable} reaches {template[3]}"


@pytest.mark.parametrize("name", ["gateway", "orders"])
def test_callers_wait_for_the_proxy(name: str, proxy_stack: dict[str, Any]) -> None:
    depends_on = proxy_stack["services"][name]["depends_on"]
    assert depends_on["haproxy"]["condition"] == "service_healthy"
    # The base file's dependencies still hold.
    assert depends_on["postgres" if name == "orders" else "orders"]["condition"] == (
        "service_healthy"
    )


# --- the gRPC health check, run for real ---------------------------------------------


def check_config(backend: Section, server_port: int, stats: Path) -> str:
    """The backend's own check rules, against one static server on loopback."""
    (template,) = backend.starting("server-template")
    options = template[4:]
    timing = []
    for keyword in ("inter", "fall", "rise"):
        timing += [keyword, options[options.index(keyword) + 1]]
    check_lines = [line for line in backend.lines if line.split()[0] in {"option", "tcp-check"}]
    (timeout_check,) = HAPROXY[("defaults", "")].starting("timeout", "check")
    return "\n".join(
        [
            "global",
            f"    stats socket {stats} mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 10s",
            "    timeout server 10s",
            "    " + " ".join(timeout_check),
            "backend under_test",
            *("    " + line for line in check_lines),
            f"    server s1 127.0.0.1:{server_port} proto h2 check " + " ".join(timing),
            "",
        ]
    )


def server_status(stats: Path) -> tuple[str, str]:
    """(status, last check) of the server, from the stats socket."""
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(stats))
        client.sendall(b"show stat\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    lines = answer.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "under_test" and row.get("svname") == "s1":
            return row["status"], row["check_status"]
    raise AssertionError(answer.decode())


@contextlib.contextmanager
def running_haproxy(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen([haproxy(), "-f", str(config)], stdout=output, stderr=output)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.asynccontextmanager
async def health_server(port: int) -> AsyncIterator[health.aio.HealthServicer]:
    """The health service the shop runtime registers (grpc_health's aio servicer)."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield servicer
    finally:
        await server.stop(0)


def _text(path: Path) -> str:
    return path.read_text()


async def wait_for_server(
    stats: Path, process: subprocess.Popen[bytes], status: str, check: str, log: Path
) -> None:
    """Until the server has this status and its last check ended with this result."""
    last = ("", "")

    def reached() -> bool:
        nonlocal last
        with contextlib.suppress(OSError):
            seen, result = server_status(stats)
            last = (seen, result.lstrip("* "))
        return last == (status, check)

    await wait_until_async(
        reached,
        f"{status} after {check}",
        15.0,
        poll_s=0.1,
        still_running=process_exited(process, "haproxy"),
        describe=lambda: f"last {last}; log: {_text(log)}",
    )


@pytest.mark.parametrize("service", ["orders", "inventory"])
async def test_health_check_follows_grpc_serving_status(service: str, tmp_path: Path) -> None:
    port = free_port()
    stats = tmp_path / "stats.sock"
    config = tmp_path / "haproxy.cfg"
    log = tmp_path / "haproxy.log"
    config.write_text(check_config(HAPROXY[("backend", service)], port, stats))
    async with health_server(port) as servicer:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        with running_haproxy(config, log) as process:
            # Up on the SERVING answer (L7OK), not merely because the port accepts.
            await wait_for_server(stats, process, "UP", "L7OK", log)
            # A replica draining after SIGTERM says NOT_SERVING: it must be taken out
            # (the check waits for SERVING until `timeout check`, then fails)...
            await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            await wait_for_server(stats, process, "DOWN", "L7TOUT", log)
            # ...and put back when it serves again.
            await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            await wait_for_server(stats, process, "UP", "L7OK", log)
