"""The echo workload and the open loop against real gRPC servers on loopback.

The servers run in the test's event loop: a bare Echo server (no route trailer,
like the benchmark's bare hop) and one behind the shop runtime's interceptor (which
adds the trailer). One server can stall for a while without blocking the client's
event loop, which is how a garbage-collection pause or an overloaded pod looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc
import pytest

from shop.loadgen.channels import ConnectError
from shop.loadgen.runner import LoadPlan
from shop.loadgen.session import LoadOptions, run_load
from shop.loadgen.workload import WorkloadError
from shop.runtime.interceptors import ServerInterceptor
from shop.runtime.metrics import RpcMetrics
from shop.v1 import echo_pb2, echo_pb2_grpc

STALL_AT_CALL = 20
STALL_S = 0.5


class EchoServicer(echo_pb2_grpc.EchoServicer):
    def __init__(self, stall: bool = False) -> None:
        self.calls = 0
        self.stall = stall
        self.stall_until = 0.0

    async def Echo(
        self, request: echo_pb2.EchoMessage, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoMessage:
        loop = asyncio.get_running_loop()
        self.calls += 1
        if self.stall and self.calls == STALL_AT_CALL:
            self.stall_until = loop.time() + STALL_S
        # Every call arriving during the stall waits for its end, as on a frozen pod.
        if loop.time() < self.stall_until:
            await asyncio.sleep(self.stall_until - loop.time())
        return echo_pb2.EchoMessage(payload=request.payload)


@dataclass
class EchoServer:
    target: str
    servicer: EchoServicer


class StartEcho(Protocol):
    async def __call__(self, *, with_runtime: bool = False, stall: bool = False) -> EchoServer: ...


@pytest.fixture
async def start_echo() -> AsyncIterator[StartEcho]:
    servers: list[grpc.aio.Server] = []

    async def start(*, with_runtime: bool = False, stall: bool = False) -> EchoServer:
        interceptors = (
            [ServerInterceptor("echo", "echo-0", RpcMetrics.create("echo", "echo-0"), None)]
            if with_runtime
            else []
        )
        server = grpc.aio.server(interceptors=interceptors)
        servicer = EchoServicer(stall=stall)
        echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return EchoServer(f"127.0.0.1:{port}", servicer)

    yield start
    for server in servers:
        await server.stop(None)


def echo_options(target: str, plan: LoadPlan, objective_ms: float | None = None) -> LoadOptions:
    return LoadOptions(
        target=target, plan=plan, workload="echo", timeout_s=5.0, objective_ms=objective_ms
    )


async def test_bare_echo_server_has_no_route(start_echo: StartEcho) -> None:
    server = await start_echo()
    summary = await run_load(echo_options(server.target, LoadPlan(duration_s=0.5, concurrency=4)))
    assert summary.calls > 0
    assert summary.status_counts == {"OK": summary.calls}
    assert summary.per_hop == {}
    assert summary.method_counts == {"Echo": summary.calls}


async def test_echo_on_the_runtime_reports_its_pod(start_echo: StartEcho) -> None:
    server = await start_echo(with_runtime=True)
    plan = LoadPlan(duration_s=0.5, rps=100)
    summary = await run_load(echo_options(server.target, plan))
    assert summary.info.mode == "open"
    assert summary.per_hop == {"echo": {"echo-0": summary.calls}}
    assert summary.imbalance() == {"echo": 1.0}


async def test_stalled_server_shows_in_open_loop_latency(
    start_echo: StartEcho,
) -> None:
    """Coordinated omission, side by side: the same stall barely moves a closed
    loop's p90 (its one worker waits politely) but inflates the open loop's, because
    calls keep arriving on schedule during the stall."""
    objective_ms = 100.0
    open_server = await start_echo(stall=True)
    opened = await run_load(
        echo_options(open_server.target, LoadPlan(duration_s=1.5, rps=100), objective_ms)
    )
    closed_server = await start_echo(stall=True)
    closed = await run_load(
        echo_options(closed_server.target, LoadPlan(duration_s=1.5, concurrency=1), objective_ms)
    )
    assert opened.failures == 0 and closed.failures == 0
    # ~50 of ~150 open-loop calls arrived during the 0.5 s stall.
    assert opened.latency_ms["p90"] >= 200
    assert closed.latency_ms["max"] >= STALL_S * 1000 * 0.9  # the one call that waited
    assert closed.latency_ms["p90"] < opened.latency_ms["p90"] / 2
    # Judged per call against the objective: the open loop sees most of the ~50 calls
    # the stall held up miss it; the closed loop, which sent one call then, sees one.
    assert opened.within_objective is not None and closed.within_objective is not None
    assert opened.within_objective < 0.9
    assert closed.within_objective > 0.97


async def test_unreachable_target_raises_connect_error() -> None:
    options = LoadOptions(
        target="127.0.0.1:1", plan=LoadPlan(duration_s=1), workload="echo", timeout_s=0.5
    )
    with pytest.raises(ConnectError, match="cannot connect to"):
        await run_load(options)


async def test_wrong_workload_for_the_target_is_one_clear_error(start_echo: StartEcho) -> None:
    server = await start_echo()
    options = LoadOptions(target=server.target, plan=LoadPlan(duration_s=1), workload="mix")
    with pytest.raises(WorkloadError, match="UNIMPLEMENTED") as error:
        await run_load(options)
    assert "--workload echo" in str(error.value)
