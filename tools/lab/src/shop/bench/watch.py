"""What idle WatchOrder streams cost: ``python -m shop.bench.watch --streams 500``.

Starts one replica of each service (real processes, as ``shop up`` runs them), places
one order per stream, opens the streams through the gateway and, while they sit
idle, reads from ``/proc``: orders' CPU seconds per second (the cost of keeping the
streams fed) and the RSS growth of the gateway and of orders per open stream. A
probe (sequential GetOrder calls) gives the latency other callers see meanwhile.

Figures, not assertions: the machine is shared, so compare runs made side by side.
Orders are spread over customers (``--per-customer`` each) so per-customer stream
caps do not refuse the load; streams are given a long deadline so that no deadline
ends them during the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from shop.bench.testbed import TELEMETRY_OFF
from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import ClusterSpec, LocalCluster
from shop.local.cpu import process_cpu_s
from shop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, orders_pb2

SKU = "ESP-001"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _pid(cluster: LocalCluster, service: str) -> int:
    (replica,) = cluster.replicas_of(service)
    assert replica.process is not None
    return replica.process.pid


async def _cpu_per_s(pid: int, window_s: float) -> float:
    before, started = process_cpu_s(pid), time.monotonic()
    await asyncio.sleep(window_s)
    after, ended = process_cpu_s(pid), time.monotonic()
    assert before is not None and after is not None
    return (after - before) / (ended - started)


async def _probe(
    gateway: gateway_pb2_grpc.GatewayStub, order_id: str, metadata: tuple[tuple[str, str]], n: int
) -> dict[str, float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await gateway.GetOrder(
            gateway_pb2.GetOrderRequest(order_id=order_id), metadata=metadata, timeout=10
        )
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1], 2),
    }


async def measure(cluster: LocalCluster, streams: int, per_customer: int, window_s: float) -> dict[
    str, object
]:  # fmt: skip
    gateway_pid, orders_pid = _pid(cluster, "gateway"), _pid(cluster, "orders")
    customers = [f"watcher-{i // per_customer}" for i in range(streams)]
    metadata = {c: cluster.end_user_metadata(c) for c in set(customers)}
    # Streams are multiplexed over a few connections, as many clients behind a proxy.
    channels = [grpc.aio.insecure_channel(cluster.gateway_target) for _ in range(4)]
    try:
        stubs = [gateway_pb2_grpc.GatewayStub(channel) for channel in channels]
        orders = []
        for i, customer in enumerate(customers):
            order = await stubs[i % 4].PlaceOrder(
                gateway_pb2.PlaceOrderRequest(items=[common_pb2.OrderItem(sku=SKU, quantity=1)]),
                metadata=metadata[customer],
                timeout=30,
            )
            orders.append(order.order_id)
        probe_md = metadata[customers[0]]
        await _probe(stubs[0], orders[0], probe_md, 50)  # warm up
        idle = {
            "orders_cpu_s_per_s": round(await _cpu_per_s(orders_pid, window_s), 4),
            "probe": await _probe(stubs[0], orders[0], probe_md, 200),
        }
        rss_before = {"gateway": rss_bytes(gateway_pid), "orders": rss_bytes(orders_pid)}
        calls = [
            stubs[i % 4].WatchOrder(
                gateway_pb2.WatchOrderRequest(order_id=order_id),
                metadata=metadata[customer],
                timeout=3600,
            )
            for i, (order_id, customer) in enumerate(zip(orders, customers, strict=True))
        ]
        firsts = await asyncio.gather(*(call.read() for call in calls), return_exceptions=True)
        opened = sum(1 for first in firsts if isinstance(first, orders_pb2.OrderEvent))
        refused = [f for f in firsts if isinstance(f, grpc.aio.AioRpcError)]
        await asyncio.sleep(1.0)  # let both servers finish setting the streams up
        watching = {
            "orders_cpu_s_per_s": round(await _cpu_per_s(orders_pid, window_s), 4),
            "probe": await _probe(stubs[0], orders[0], probe_md, 200),
        }
        rss_after = {"gateway": rss_bytes(gateway_pid), "orders": rss_bytes(orders_pid)}
        for call in calls:
            call.cancel()
        return {
            "streams_requested": streams,
            "streams_open": opened,
            "refused": sorted({f"{e.code().name}: {e.details()}" for e in refused}),
            "window_s": window_s,
            "idle_no_streams": idle,
            "idle_watching": watching,
            "rss_mib_before": {k: round(v / 2**20, 1) for k, v in rss_before.items()},
            "rss_kib_per_stream": {
                k: round((rss_after[k] - rss_before[k]) / 1024 / max(opened, 1), 1)
                for k in rss_after
            },
        }
    finally:
        for channel in channels:
            await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--per-customer", type=int, default=5)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per CPU window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shop-watch-bench-") as work:
        spec = ClusterSpec(
            replicas={"gateway": 1, "orders": 1, "inventory": 1},
            plan=AddressPlan(net=free_net()),
            data_dir=Path(work),
            drain_delay_s=0.0,
            shutdown_grace_s=1.0,
            extra_env=TELEMETRY_OFF,
        )
        with LocalCluster(spec) as cluster:
            result = asyncio.run(measure(cluster, args.streams, args.per_customer, args.window))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
