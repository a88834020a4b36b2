"""``shop health``: the probe the container image ships, against real servers on loopback.

Its promise is an exit code a HEALTHCHECK, a compose healthcheck or a Helm test pod
can trust (0 only when every target answered SERVING) and one line per target a
person can read. The command uses the synchronous gRPC client, so in-process runs
go to a thread: the servers under test live on this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.api.services import ECHO as ECHO_SERVICE
from shop.cli.health import local_target
from shop.cli.main import main
from shop.echo.app import setup as echo_setup
from shop.local.addresses import free_port
from shop.runtime.health import HealthService

from ..support.servers import StartServer
from ..support.waiting import wait_until_async

SHOP = Path(sys.executable).parent / "shop"


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def shop_health(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    """``shop health ARGV`` in this process, off the event loop that serves the targets."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["health", *argv])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


@dataclass
class HealthOnlyServer:
    address: str
    health: HealthService


@pytest.fixture
async def health_server() -> AsyncIterator[HealthOnlyServer]:
    """A grpc.aio server with only the runtime's health service, statuses set by the test."""
    server = grpc.aio.server()
    health = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    try:
        yield HealthOnlyServer(address, health)
    finally:
        await server.stop(None)


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A loopback port that accepts TCP connections and never says a word of HTTP/2."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def closed_port() -> str:
    """A loopback address nothing listens on (connections are refused at once)."""
    return f"127.0.0.1:{free_port()}"


# --- what each kind of answer exits with ----------------------------------------------


async def test_serving_shop_server_exits_0(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await start_server("echo", echo_setup)
    result = await shop_health(capsys, server.address)
    assert result.code == 0, result.out
    assert result.lines == [f"{server.address}  SERVING"]
    assert result.err == ""
    # One gRPC service of the server, by its full name.
    result = await shop_health(capsys, server.address, "--service", ECHO_SERVICE)
    assert result.code == 0, result.out


@pytest.mark.parametrize(
    "status", [health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.UNKNOWN]
)
async def test_answer_other_than_serving_exits_1(
    health_server: HealthOnlyServer, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    await health_server.health.set("", status)
    result = await shop_health(capsys, health_server.address)
    assert result.code == 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    assert result.lines == [f"{health_server.address}  {name}"]


async def test_draining_server_is_not_serving(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # What the probe sees between SIGTERM and the server's stop: NOT_SERVING, port open.
    server = await start_server("echo", echo_setup, drain_delay_s=2.0)
    server.shutdown.trigger("test: SIGTERM")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def draining() -> bool:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)

        await wait_until_async(draining, "the server to start draining", 10, poll_s=0.01)
    result = await shop_health(capsys, server.address)
    assert result.code == 1
    assert result.lines == [f"{server.address}  NOT_SERVING"]


async def test_unreachable_target_fails_fast_with_a_clear_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = closed_port()
    started = time.monotonic()
    result = await shop_health(capsys, target, "--timeout", "5")
    elapsed = time.monotonic() - started
    assert result.code == 1
    [line] = result.lines
    assert line.startswith(f"{target}  UNAVAILABLE  unreachable: ")
    assert "Connection refused" in line
    # A refused connection is an answer: no waiting for the deadline.
    assert elapsed < 4, elapsed


async def test_silent_target_fails_at_the_timeout(
    silent_listener: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    result = await shop_health(capsys, silent_listener, "--timeout", "0.5")
    elapsed = time.monotonic() - started
    assert result.code == 1
    assert result.lines == [f"{silent_listener}  DEADLINE_EXCEEDED  no answer within 0.5 s"]
    assert 0.4 < elapsed < 3.0, elapsed


async def test_unknown_service_name_exits_1(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await start_server("echo", echo_setup)
    result = await shop_health(capsys, server.address, "--service", "shop.v1.Orders")
    assert result.code == 1
    assert result.lines == [
        f"{server.address}  NOT_FOUND  the server has no service named 'shop.v1.Orders'"
    ]


async def test_one_target_down_among_several_exits_1(
    start_server: StartServer, silent_listener: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await start_server("echo", echo_setup)
    second = await start_server("echo", echo_setup)
    down = closed_port()
    result = await shop_health(capsys, first.address, down, second.address)
    assert result.code == 1
    statuses = [line.split()[:2] for line in result.lines]
    assert statuses == [
        [first.address, "SERVING"],
        [down, "UNAVAILABLE"],
        [second.address, "SERVING"],
    ]
    # Every target is asked at once: three that never answer cost one timeout.
    started = time.monotonic()
    result = await shop_health(capsys, *[silent_listener] * 3, "--timeout", "2")
    assert result.code == 1
    assert time.monotonic() - started < 4.5  # one after the other: 6 s


# --- the default target: this container's own server ----------------------------------


@pytest.mark.parametrize(
    ("listen_addr", "target"),
    [
        ("0.0.0.0:50051", "127.0.0.1:50051"),
        ("[::]:8443", "[::1]:8443"),
        ("[0:0:0:0:0:0:0:0]:1", "[::1]:1"),
        ("127.0.0.7:50051", "127.0.0.7:50051"),
        ("[::1]:50051", "[::1]:50051"),
        ("gateway-0.shop:50051", "gateway-0.shop:50051"),
    ],
)
def test_local_target_replaces_only_a_wildcard_host(listen_addr: str, target: str) -> None:
    assert local_target(listen_addr) == target


async def test_default_target_is_shop_listen_addr_on_loopback(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await start_server("echo", echo_setup)
    port = server.address.rpartition(":")[2]
    # The container's server listens on every interface; the probe asks on loopback.
    monkeypatch.setenv("SHOP_LISTEN_ADDR", f"0.0.0.0:{port}")
    result = await shop_health(capsys)
    assert result.code == 0, result.out
    assert result.lines == [f"127.0.0.1:{port}  SERVING"]


async def test_default_target_without_shop_listen_addr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SHOP_LISTEN_ADDR", raising=False)
    result = await shop_health(capsys, "--json", "--timeout", "0.5")
    # Whatever may listen on this machine's port 50051, the question went there.
    assert [t["target"] for t in json.loads(result.out)["targets"]] == ["127.0.0.1:50051"]


def test_invalid_shop_listen_addr_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOP_LISTEN_ADDR", "50051")
    assert main(["health"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("shop health: configuration error: SHOP_LISTEN_ADDR='50051'")


# --- output for scripts, flags ---------------------------------------------------------


async def test_json_output(start_server: StartServer, capsys: pytest.CaptureFixture[str]) -> None:
    server = await start_server("echo", echo_setup)
    down = closed_port()
    result = await shop_health(capsys, server.address, down, "--json", "--service", ECHO_SERVICE)
    assert result.code == 1
    report = json.loads(result.out)
    assert report["serving"] is False
    assert report["service"] == ECHO_SERVICE
    assert report["timeout_s"] == 2.0
    up, failed = report["targets"]
    assert up["target"] == server.address
    assert (up["serving"], up["status"], up["code"], up["error"]) == (True, "SERVING", "OK", None)
    assert failed["target"] == down
    assert (failed["serving"], failed["status"], failed["code"]) == (False, None, "UNAVAILABLE")
    assert failed["error"].startswith("unreachable: ")
    assert all(0 <= t["elapsed_s"] < 2.0 for t in report["targets"])


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "soon"], "--timeout"),
        (["--timeout", "-1"], "--timeout"),
        ([""], "TARGET"),
        (["--services", "x"], "--services"),
    ],
)
def test_bad_flag_exits_2_naming_it(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["health", *argv])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


# --- the installed command, as a container runs it -------------------------------------


async def run_shop(
    *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``shop`` console script next to this Python, off the event loop."""
    assert SHOP.exists(), f"{SHOP} missing: is the project installed in this environment?"
    return await asyncio.to_thread(
        subprocess.run,
        [str(SHOP), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


async def test_console_script(start_server: StartServer) -> None:
    server = await start_server("echo", echo_setup)
    result = await run_shop("health", server.address, "--timeout", "5")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"{server.address}  SERVING\n",
        "",
    )
    # As a HEALTHCHECK runs it: no target, the address from the container's environment.
    env = {**os.environ, "SHOP_LISTEN_ADDR": f"0.0.0.0:{server.address.rpartition(':')[2]}"}
    result = await run_shop("health", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    down = closed_port()
    result = await run_shop("health", down, "--timeout", "1")
    assert result.returncode == 1
    assert result.stdout.startswith(f"{down}  UNAVAILABLE  unreachable: ")
    assert result.stderr == ""


def test_health_module_loads_only_what_a_probe_needs() -> None:
    # The probe runs every few seconds in every container: importing it must not
    # pull in the runtime, telemetry, storage or the terminal UI of other commands.
    heavy = {"shop.runtime", "asyncpg", "opentelemetry", "prometheus_client", "rich"}
    code = "import sys, shop.cli.health; print('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stdout.split())
    assert not {m for m in loaded if m.split(".")[0] in heavy or m in heavy}
