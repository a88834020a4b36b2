"""``python -m shop.echo`` in both modes: answers Echo, reports SERVING, stops on SIGTERM.

The two modes must differ only in what the runtime adds: the runtime server sends
the ``shop-route`` trailer (its interceptor ran) and offers reflection; the bare
one sends neither. A bare server with ``--forward`` (a hop of chain-bare) answers
through the next one, passes a failure there on with its status, and refuses a
malformed ``--forward`` naming the flag.
"""

from __future__ import annotations

import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shop.bench.testbed import TELEMETRY_OFF
from shop.echo.__main__ import main as echo_main
from shop.echo.servicer import SERVICE_NAME
from shop.local.addresses import free_port
from shop.runtime.callscope import ROUTE_TRAILER
from shop.v1 import echo_pb2, echo_pb2_grpc

from .conftest import StartEchoServer

MODES = [pytest.param(True, id="bare"), pytest.param(False, id="runtime")]


def list_services(channel: grpc.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = stub.ServerReflectionInfo(iter([request]), timeout=5)
    return [service.name for service in response.list_services_response.service]


@pytest.mark.parametrize("bare", MODES)
def test_echo_answers_and_health_is_serving(start_echo_server: StartEchoServer, bare: bool) -> None:
    replica = start_echo_server(bare=bare, env=TELEMETRY_OFF)
    with grpc.insecure_channel(replica.grpc_addr) as channel:
        reply, call = echo_pb2_grpc.EchoStub(channel).Echo.with_call(
            echo_pb2.EchoMessage(payload=b"ping"), timeout=5
        )
        assert reply.payload == b"ping"
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        trailers = dict(call.trailing_metadata() or ())
        if bare:
            assert ROUTE_TRAILER not in trailers
            with pytest.raises(grpc.RpcError) as error:
                list_services(channel)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        else:
            assert trailers[ROUTE_TRAILER] == f"echo/{replica.pod}"
            assert SERVICE_NAME in list_services(channel)


@pytest.mark.parametrize("bare", MODES)
def test_echo_stops_cleanly_on_sigterm(start_echo_server: StartEchoServer, bare: bool) -> None:
    replica = start_echo_server(bare=bare, env=TELEMETRY_OFF)
    assert replica.process is not None
    replica.process.send_signal(signal.SIGTERM)
    assert replica.process.wait(timeout=30) == 0
    assert not replica.alive()


def test_a_bare_chain_answers_through_its_next_hop(start_echo_server: StartEchoServer) -> None:
    last = start_echo_server(bare=True)
    first = start_echo_server(bare=True, forward=last.grpc_addr)
    with grpc.insecure_channel(first.grpc_addr) as channel:
        echo = echo_pb2_grpc.EchoStub(channel).Echo
        assert echo(echo_pb2.EchoMessage(payload=b"two hops"), timeout=5).payload == b"two hops"
        # The answer came from the last hop: without it the first cannot answer.
        assert last.process is not None
        last.process.send_signal(signal.SIGTERM)
        assert last.process.wait(timeout=30) == 0
        with pytest.raises(grpc.RpcError) as error:
            echo(echo_pb2.EchoMessage(payload=b"gone"), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert last.grpc_addr in (error.value.details() or "")
    assert first.alive()


def test_a_hop_forwarding_to_a_closed_port_fails_the_call_at_once(
    start_echo_server: StartEchoServer,
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    first = start_echo_server(bare=True, forward=closed)
    with grpc.insecure_channel(first.grpc_addr) as channel, pytest.raises(grpc.RpcError) as error:
        # A hang would end DEADLINE_EXCEEDED after these 10 s instead.
        echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoMessage(payload=b"x"), timeout=10)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
    assert f"next hop {closed}" in (error.value.details() or "")
    assert first.alive()


@pytest.mark.parametrize(
    "argv",
    [
        ["--bare", "--forward", "nonsense"],
        ["--bare", "--forward", "127.0.0.1"],
        ["--bare", "--forward", "127.0.0.1:0"],
        ["--bare", "--forward", "127.0.0.1:70000"],
        ["--bare", "--forward", ":50051"],
        ["--bare", "--forward=http://127.0.0.1:50051"],
        # The runtime's Echo does not forward.
        ["--forward", "127.0.0.1:50051"],
    ],
)
def test_a_bad_forward_is_refused_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        echo_main(argv)
    assert exit_info.value.code == 2
    assert "argument --forward" in capsys.readouterr().err
