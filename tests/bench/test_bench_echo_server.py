"""``python -m shop.echo`` in both modes: answers Echo, reports SERVING, stops on SIGTERM.

The two modes must differ only in what the runtime adds: the runtime server sends
the ``shop-route`` trailer (its interceptor ran) and offers reflection; the bare
one sends neither.
"""

from __future__ import annotations

import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shop.bench.testbed import TELEMETRY_OFF
from shop.echo.servicer import SERVICE_NAME
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
