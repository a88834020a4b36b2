"""A service process as a pod starts it: its environment, and running it to its exit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from shop.credentials import LocalCredentials
from shop.local.addresses import free_port

# ``pod_env(**overrides)`` (the fixture): a pod's environment with these settings.
PodEnv = Callable[..., dict[str, str]]


def pod_environment(
    data_dir: Path, credentials: LocalCredentials, **overrides: str
) -> dict[str, str]:
    """A service process's environment as a pod would get it: nothing of ours (SHOP_*,
    OTEL_*, DATABASE_*, GRPC_*) leaks in, it listens on a free loopback port, exports no
    metrics or spans, and stops without a drain delay."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SHOP_", "OTEL_", "DATABASE_", "GRPC_"))
    }
    env.update(
        {
            "SHOP_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
            "SHOP_METRICS_ADDR": "off",
            "SHOP_DATA_DIR": str(data_dir),
            "SHOP_DRAIN_DELAY_S": "0",
            "OTEL_TRACES_EXPORTER": "none",
            **credentials.service_env(),
        }
    )
    env.update(overrides)
    return env


def run_service_module(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m module`` (a service) to its exit, e.g. a start-up that must fail."""
    return subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
