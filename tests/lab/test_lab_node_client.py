"""A Node.js client (grpc-js) with the "headless fix" snippet, against the lab's parts.

``tools/node-client/shares.js`` runs in a process of its own (``run_node_shares``) and
calls three in-process inventory servers that share one port on three loopback IPs,
as a headless Service's pods do: through the lab's cluster DNS (``dns://`` target)
and through its xDS control plane (``xds:///`` target). The pod that served each call
comes from the ``shop-route`` trailer of the standard health check.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from shop.lab.dns import ClusterDns
from shop.lab.endpoints import Endpoint
from shop.lab.node_client import NodeShares, node_available, node_command, run_node_shares
from shop.lab.xds import XdsControlPlane
from shop.local.addresses import AddressPlan, free_net, free_port
from shop.runtime import Runtime

from ..support.servers import StartServer

PODS = ("inventory-0", "inventory-1", "inventory-2")


@asynccontextmanager
async def _health_only(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
    """No shop service: the runtime's own health service is all the client calls."""
    yield ()


@pytest.fixture
def node() -> None:
    # Missing Node.js or packages fail the test: `make venv` installs them.
    problem = node_available()
    assert problem is None, problem


@pytest.fixture
async def pods(start_server: StartServer) -> list[Endpoint]:
    """Three inventory servers on one port, one loopback IP each (a headless Service's
    pods), SERVING."""
    port = free_port()
    plan = AddressPlan(net=free_net(port), grpc_port=port)
    endpoints = [Endpoint(pod, plan.ip("inventory", i), port) for i, pod in enumerate(PODS)]
    for endpoint in endpoints:
        await start_server(
            "inventory",
            _health_only,
            listen_addr=f"{endpoint.ip}:{endpoint.port}",
            pod_name=endpoint.pod,
        )
    return endpoints


@pytest.fixture
async def dns(pods: list[Endpoint]) -> AsyncIterator[ClusterDns]:
    async with ClusterDns() as server:
        await server.publish("inventory", pods)
        yield server


def assert_cold_round_robin(shares: NodeShares, calls: int) -> None:
    """Every call OK, every pod within a quarter of its even share.

    Not exactly even, because of how a cold channel starts: round_robin reports READY
    with its first READY subchannel and picks among READY ones only, so the first
    ``concurrency`` calls (queued while the channel connected) all go to the pod that
    connected first; the others are READY within milliseconds, before those calls
    return, and from then on every pick advances one rotation over all three. With 60
    calls, 4 in flight: 4 + 19 for the first pod, 19 and 18 for the others (56 picks
    in rotation; seen in every run, DNS and xDS alike). The bound
    leaves room for a slow machine to let a few more calls go out before the last
    subchannel is READY; ``warmup_pods`` removes the effect (the exact tests below).
    """
    assert (shares.ok, shares.failures) == (calls, 0), shares.errors
    assert shares.status_counts == {"OK": calls}
    assert set(shares.per_pod) == set(PODS), shares.per_pod
    even = calls // len(PODS)
    for pod, n in shares.per_pod.items():
        assert even * 3 // 4 <= n <= even * 5 // 4, (pod, shares.per_pod)


def assert_exact_round_robin(shares: NodeShares, calls: int) -> None:
    """After the warm-up every subchannel is READY: the picker rotates over all three
    and each measured call advances it by one, so each pod gets exactly a third."""
    assert (shares.ok, shares.failures) == (calls, 0), shares.errors
    assert shares.per_pod == dict.fromkeys(PODS, calls // len(PODS)), shares.per_pod
    assert shares.warmup_calls >= len(PODS)


@pytest.mark.usefixtures("node")
async def test_headless_fix_spreads_calls_over_every_pod(
    dns: ClusterDns, pods: list[Endpoint]
) -> None:
    target = dns.target("inventory", pods[0].port)
    cold = await run_node_shares(target, 60, 4)
    print("round_robin over DNS, cold:", cold.per_pod)
    assert_cold_round_robin(cold, 60)
    warm = await run_node_shares(target, 60, 4, warmup_pods=len(PODS))
    print("round_robin over DNS, warmed up:", warm.per_pod, warm.warmup_calls)
    assert_exact_round_robin(warm, 60)


@pytest.mark.usefixtures("node")
async def test_without_the_snippet_every_call_goes_to_one_pod(
    dns: ClusterDns, pods: list[Endpoint]
) -> None:
    """The control: grpc-js's default pick_first, same target, same DNS answers: one
    connection, to the first address of the answer (which pod that is depends on where
    the DNS's rotation of the answer stands)."""
    shares = await run_node_shares(
        dns.target("inventory", pods[0].port), 60, 4, service_config=False
    )
    print("pick_first over DNS:", shares.per_pod)
    assert (shares.ok, shares.failures) == (60, 0), shares.errors
    assert len(shares.per_pod) == 1 and set(shares.per_pod) <= set(PODS), shares.per_pod


@pytest.fixture
async def plane(pods: list[Endpoint]) -> AsyncIterator[XdsControlPlane]:
    control_plane = XdsControlPlane()
    await control_plane.start()
    try:
        await control_plane.publish("inventory", pods)
        yield control_plane
    finally:
        await control_plane.close()


@pytest.mark.usefixtures("node")
async def test_proxyless_xds_target_balances_per_call(
    plane: XdsControlPlane,
    pods: list[Endpoint],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """grpc-js-xds turns the cluster's ROUND_ROBIN into xds_wrr_locality over grpc-js's
    round_robin (one locality here), so the shares behave as over DNS."""
    caplog.set_level(logging.DEBUG, logger="shop.lab.xds")
    bootstrap = plane.write_bootstrap(tmp_path / "xds-bootstrap.json", node_id="node-shares")
    env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap)}
    target = plane.target("inventory", pods[0].port)
    cold = await run_node_shares(target, 60, 4, env=env, timeout_s=30)
    print("xDS, cold:", cold.per_pod)
    assert_cold_round_robin(cold, 60)
    warm = await run_node_shares(target, 60, 4, env=env, timeout_s=30, warmup_pods=len(PODS))
    print("xDS, warmed up:", warm.per_pod, warm.warmup_calls)
    assert_exact_round_robin(warm, 60)
    # Listener, cluster and endpoints accepted, by both processes.
    acks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("xDS ACK")]
    for kind in ("Listener", "Cluster", "ClusterLoadAssignment"):
        assert sum(f"v3.{kind} " in ack for ack in acks) == 2, acks
    assert not [r for r in caplog.records if "NACK" in r.getMessage()]


@pytest.mark.usefixtures("node")
async def test_grpc_js_xds_rejects_least_request(pods: list[Endpoint], tmp_path: Path) -> None:
    """Like gRPC's C core, grpc-js-xds 1.14 takes a cluster's lb_policy enum only as
    ROUND_ROBIN (RING_HASH behind a flag) and has no least_request policy at all: it
    NACKs the cluster, and the channel fails every call with the validation error."""
    plane = XdsControlPlane(lb_policy="LEAST_REQUEST")
    await plane.start()
    try:
        await plane.publish("inventory", pods)
        bootstrap = plane.write_bootstrap(tmp_path / "xds-bootstrap.json", node_id="node-shares")
        shares = await run_node_shares(
            plane.target("inventory", pods[0].port),
            4,
            4,
            env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)},
            timeout_s=30,
        )
    finally:
        await plane.close()
    assert shares.status_counts == {"UNAVAILABLE": 4} and shares.per_pod == {}, shares
    (error,) = shares.errors
    assert "unsupported lb_policy: LEAST_REQUEST" in error, error


@pytest.mark.usefixtures("node")
async def test_a_run_that_cannot_finish_stops_at_its_timeout() -> None:
    """Bounded: waiting for pods that never answer ends at timeout_s, as an error."""
    port = free_port()  # nobody listens: every warm-up call fails, forever
    with pytest.raises(RuntimeError, match=r"exited 1: shares.js: stopped after 1s"):
        await run_node_shares(f"127.0.0.1:{port}", 3, 1, timeout_s=1, warmup_pods=1)


@pytest.mark.usefixtures("node")
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--calls", "3", "--concurrency", "1"], "--target"),
        (["--target", "127.0.0.1:1", "--calls", "0", "--concurrency", "1"], "--calls"),
        (["--target", "127.0.0.1:1", "--calls", "3", "--concurrency", "x"], "--concurrency"),
        (["--target", "127.0.0.1:1", "--calls", "3", "--concurrency", "1", "--deadline-ms"],
         "--deadline-ms"),
        (["--target", "127.0.0.1:1", "--calls", "3", "--concurrency", "1", "--warmup-pods", "-1"],
         "--warmup-pods"),
        (["--target", "127.0.0.1:1", "--calls", "3", "--concurrency", "1", "--bogus"],
         "--bogus"),
    ],
)  # fmt: skip
def test_a_bad_flag_exits_2_naming_it(args: list[str], flag: str) -> None:
    node, script = node_command("unused", 1, 1)[:2]
    done = subprocess.run([node, script, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert flag in line, line
