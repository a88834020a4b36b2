"""The testbed's bare chain: three bare echo servers in a row, started last one first,
the load's target the first; and no server left running when one fails to start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shop.bench import testbed
from shop.bench.configs import select
from shop.bench.echo_process import start_echo, stop_echoes, wait_serving
from shop.local.cluster import ClusterError, Replica
from shop.v1 import echo_pb2, echo_pb2_grpc


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def forwards_to(pid: int) -> str | None:
    argv = command_line(pid)
    return argv[argv.index("--forward") + 1] if "--forward" in argv else None


@pytest.fixture
def recorded_starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Replica]]:
    """Every echo server the testbed starts, in start order; stopped at teardown
    whatever the testbed did."""
    started: list[Replica] = []

    def recording(*args: Any, **kwargs: Any) -> Replica:
        replica = start_echo(*args, **kwargs)
        started.append(replica)
        return replica

    monkeypatch.setattr(testbed, "start_echo", recording)
    try:
        yield started
    finally:
        stop_echoes(started)


def test_the_bare_chain_runs_three_hops_front_first(
    tmp_path: Path, recorded_starts: list[Replica]
) -> None:
    (config,) = select(["chain-bare"])
    with testbed.Testbed((config,), tmp_path, None) as bed:
        target = bed.target(config)
        assert len(target.processes) == 3
        assert target.metrics_addr is None  # CPU per call from the loader's rate
        last, middle, first = recorded_starts  # started last one first
        assert list(target.processes.values()) == [
            r.process.pid for r in (first, middle, last) if r.process is not None
        ]
        assert target.address == first.grpc_addr
        assert [forwards_to(pid) for pid in target.pids] == [
            middle.grpc_addr, last.grpc_addr, None,
        ]  # fmt: skip
        with grpc.insecure_channel(target.address) as channel:
            reply = echo_pb2_grpc.EchoStub(channel).Echo(
                echo_pb2.EchoMessage(payload=b"three hops"), timeout=5
            )
        assert reply.payload == b"three hops"
        assert bed.dead_servers() == []
    assert not any(r.alive() for r in recorded_starts)


def test_a_bare_chain_that_fails_to_start_leaves_no_server_running(
    tmp_path: Path, recorded_starts: list[Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[Replica] = []

    def second_never_serves(replica: Replica, timeout_s: float) -> None:
        waits.append(replica)
        if len(waits) == 2:
            raise ClusterError(f"{replica.pod} not SERVING in time (the test's doing)")
        wait_serving(replica, timeout_s)

    monkeypatch.setattr(testbed, "wait_serving", second_never_serves)
    with (
        pytest.raises(ClusterError, match="the test's doing"),
        testbed.Testbed(select(["chain-bare"]), tmp_path, None),
    ):
        pytest.fail("the testbed must not start")
    assert len(recorded_starts) == 2  # the front one never started
    assert not any(r.alive() for r in recorded_starts)
