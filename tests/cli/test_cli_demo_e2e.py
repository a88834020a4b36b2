"""``shop demo --json``: the whole life cycle in one command, on a free loopback net."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from shop.local.addresses import AddressPlan, address_in_use, free_net


def test_demo_runs_reports_and_stops(tmp_path: Path) -> None:
    net = free_net()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "shop.cli.main", "demo", "--duration", "3", "--json"),
            *("--warmup", "0.5", "--net", str(net), "--no-progress"),
            # Generous: other suites may be loading this 2-core machine at the same time.
            *("--timeout", "30"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its fresh data dir goes
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["replicas"] == {"gateway": 1, "orders": 3, "inventory": 3}
    assert doc["calls"] > 0
    assert doc["failures"] == 0
    for service in ("orders", "inventory"):
        assert len(doc["per_hop"][service]) > 1
    # Every replica was stopped: the demo's addresses are free again.
    plan = AddressPlan(net=net)
    for service, count in doc["replicas"].items():
        for index in range(count):
            assert address_in_use(plan.grpc_addr(service, index)) is None
    # A successful demo removes the data directory it made.
    assert not list(tmp_path.glob("shop-demo-*"))


def test_demo_with_a_busy_address_fails_in_one_line(tmp_path: Path) -> None:
    net = free_net()
    gateway_addr = AddressPlan(net=net).grpc_addr("gateway", 0)
    host, _, port = gateway_addr.rpartition(":")
    with socket.socket() as holder:
        holder.bind((host, int(port)))
        holder.listen()
        result = subprocess.run(
            [sys.executable, "-m", "shop.cli.main", "demo", "--net", str(net), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"shop demo: {gateway_addr} is already in use (needed by gateway-0); "
        "stop whatever holds it or choose another --base-port / --net"
    ]
    assert not list(tmp_path.glob("shop-demo-*"))  # nothing started, nothing left
