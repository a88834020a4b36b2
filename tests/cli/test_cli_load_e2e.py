"""``shop load --json`` as a subprocess against a real local cluster.

This is how the benchmark consumes it, so the test parses stdout as one JSON object
and checks the documented keys, then the shop-specific promise: the per-pod share
per hop shows more than one orders and inventory pod (the shop balances inside).
The load generator mints each customer's bearer token with the cluster's demo
issuer key (``--token-key``), as ``shop up`` users do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from shop.local.cluster import LocalCluster

CLUSTER_REPLICAS = {"gateway": 1, "orders": 2, "inventory": 2}
FATAL_CODES = {"UNKNOWN", "INTERNAL"}
# Every customer has a good token and reads back only orders it placed itself.
AUTH_CODES = {"UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"}


def shop_load(target: str, *flags: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "shop.cli.main", "load", "--target", target, "--json", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_load_json_against_a_cluster(cluster_factory: Any) -> None:
    cluster: LocalCluster = cluster_factory(**CLUSTER_REPLICAS)
    token_key = str(cluster.credentials.issuer_key)
    closed = shop_load(
        cluster.gateway_target,
        "--token-key", token_key,
        "--duration", "3", "--warmup", "0.5", "--concurrency", "8",
        "--expect", "orders=2", "--expect", "inventory=2",
    )  # fmt: skip
    assert closed["workload"] == "mix"
    assert closed["mode"] == "closed"
    assert closed["calls"] > 0
    assert closed["calls_per_s"] > 0
    assert not (FATAL_CODES | AUTH_CODES) & set(closed["status_counts"]), closed["status_counts"]
    assert {"PlaceOrder", "GetOrder", "ListOrders"} <= set(closed["method_counts"])
    assert sum(closed["status_counts"].values()) == closed["calls"]
    assert closed["errors"] == closed["calls"] - closed["status_counts"].get("OK", 0)
    assert closed["dropped"] == 0
    latency = closed["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    for service in ("orders", "inventory"):
        pods = closed["per_hop"][service]
        assert len(pods) > 1, pods
        assert set(pods) <= {f"{service}-{i}" for i in range(CLUSTER_REPLICAS[service])}
        assert closed["imbalance"][service] >= 1.0
    assert closed["per_hop"]["gateway"] == {"gateway-0": closed["per_hop"]["gateway"]["gateway-0"]}

    opened = shop_load(
        cluster.gateway_target,
        "--token-key", token_key,
        "--workload", "products", "--rps", "40", "--duration", "1.5", "--warmup", "0",
    )  # fmt: skip
    assert opened["mode"] == "open"
    assert opened["rps"] == 40
    assert opened["concurrency"] is None
    assert opened["calls"] > 0
    assert set(opened["method_counts"]) == {"ListProducts"}
    assert "orders" not in opened["per_hop"]  # ListProducts goes gateway -> inventory
    assert len(opened["per_hop"]["inventory"]) > 1
