"""``shop serve SERVICE``: the container's command runs a service like ``python -m``.

A container's life in small: the process becomes SERVING (as ``shop health`` sees
it), exits 0 on SIGTERM after its graceful stop, and a bad name or a bad setting
stops it at once with exit 2 and one line naming what is wrong.
"""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from shop.cli.health import TargetHealth, check_targets
from shop.cli.main import main
from shop.cli.serve import SERVICES
from shop.credentials import LocalCredentials
from shop.local.addresses import free_port
from shop.v1 import gateway_pb2_grpc, inventory_pb2

from ..support.auth import user_metadata
from ..support.waiting import process_exited, wait_until

SHOP = Path(sys.executable).parent / "shop"
EXIT_CONFIG_ERROR = 2

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Starts ``shop ARGV``, its stderr in a file; every process is killed at teardown."""
    assert SHOP.exists(), f"{SHOP} missing: is the project installed in this environment?"
    processes: list[subprocess.Popen[bytes]] = []

    def start(*argv: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (tmp_path / f"stderr-{len(processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(SHOP), *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        processes.append(process)
        return process

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def wait_serving(process: subprocess.Popen[bytes], target: str, timeout_s: float = 60) -> None:
    """Asks the way ``shop health`` does until the server says SERVING."""
    results: list[TargetHealth] = []

    def serving() -> bool:
        [result] = check_targets([target], "", 1.0)
        results.append(result)
        return result.serving

    wait_until(
        serving,
        "SERVING",
        timeout_s,
        poll_s=0.1,
        still_running=process_exited(process, "the server"),
        describe=lambda: f"last answer: {results[-1]}",
    )


def shop_health(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHOP), "health", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_serve_inventory_until_sigterm(
    spawn: Spawn, pod_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = pod_env()
    target = env["SHOP_LISTEN_ADDR"]
    process = spawn("serve", "inventory", env=env)
    wait_serving(process, target)
    probe = shop_health(target, "--service", "shop.v1.Inventory", "--timeout", "5")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout == f"{target}  SERVING\n"
    # Its SQLite file went where SHOP_DATA_DIR says, as the image's writable path.
    assert (Path(env["SHOP_DATA_DIR"]) / "inventory.db").exists()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    stderr = (tmp_path / "stderr-0.log").read_text()
    assert "Traceback" not in stderr
    assert '"msg": "stopped"' in stderr
    assert shop_health(target, "--timeout", "1").returncode == 1


def test_unknown_service_is_exit_2_naming_the_argument(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "shipping"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument SERVICE: invalid choice: 'shipping'" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve"])
    assert exit_info.value.code == 2
    assert "SERVICE" in capsys.readouterr().err


@pytest.mark.parametrize("service", SERVICES)
def test_bad_setting_is_exit_2_with_one_line(
    service: str, spawn: Spawn, pod_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    process = spawn("serve", service, env=pod_env(SHOP_DRAIN_DELAY_S="soon"))
    assert process.wait(timeout=60) == EXIT_CONFIG_ERROR
    [line] = (tmp_path / "stderr-0.log").read_text().splitlines()
    assert line.startswith(
        f"{service}: configuration error: SHOP_DRAIN_DELAY_S='soon' is not valid: "
        "expected a number of seconds >= 0"
    )


def test_every_runnable_service_can_be_served() -> None:
    # Each package with a __main__ (python -m shop.<name>) is a service `shop serve`
    # offers, and both hand run_service the same setup.
    # shop is a namespace package over every distribution's src/ folder in the repository.
    repo = Path(__file__).resolve().parents[2]
    runnable = {path.parent.name for path in repo.glob("*/*/src/shop/*/__main__.py")}
    assert set(SERVICES) == runnable
    for name in SERVICES:
        app = importlib.import_module(f"shop.{name}.app")
        entry = importlib.import_module(f"shop.{name}.__main__")
        assert entry.setup is app.setup


# The gateway's distribution declares no database library; its process must not need
# one anywhere on its path (the runtime kit's failure mapping once imported the
# database module, and so asyncpg, for every service).
WITHOUT_DATABASE_STACK = """
import sys
for name in ("asyncpg", "shop.runtime.database"):
    sys.modules[name] = None  # any import of them now raises ImportError
from shop.cli.main import main
raise SystemExit(main(["serve", "gateway"]))
"""


def test_the_gateway_serves_without_the_database_stack(
    pod_env: Callable[..., dict[str, str]], credentials: LocalCredentials, tmp_path: Path
) -> None:
    # Its callees are nowhere: a call must come back UNAVAILABLE, through the same
    # failure mapping that answers a database outage in the stateful services.
    nowhere = f"127.0.0.1:{free_port()}"
    env = pod_env(SHOP_ORDERS_TARGET=nowhere, SHOP_INVENTORY_TARGET=nowhere)
    target = env["SHOP_LISTEN_ADDR"]
    stderr = tmp_path / "gateway.log"
    with stderr.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", WITHOUT_DATABASE_STACK],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_serving(process, target)
        with grpc.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListProducts(
                    inventory_pb2.ListProductsRequest(page_size=5),
                    metadata=user_metadata(credentials, "cust-1"),
                    timeout=20,
                )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, stderr.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert "Traceback" not in stderr.read_text()
