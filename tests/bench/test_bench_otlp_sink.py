"""The OTLP sink receives the runtime's spans when tracing is on, and none when it is off.

This is what makes the benchmark's "tracing on" figures trustworthy: spans really
leave the server over OTLP/gRPC and arrive somewhere that counts them.
"""

from __future__ import annotations

import grpc

from shop.bench.echo_process import stop_echoes
from shop.bench.otlp_sink import OtlpSink
from shop.bench.testbed import TELEMETRY_OFF, tracing_env
from shop.v1 import echo_pb2, echo_pb2_grpc

from .conftest import StartEchoServer

CALLS = 25


def call_echo(address: str, calls: int) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(calls):
            stub.Echo(echo_pb2.EchoMessage(payload=b"x"), timeout=5)


def test_traced_runtime_echo_exports_one_server_span_per_call(
    start_echo_server: StartEchoServer,
) -> None:
    with OtlpSink() as sink:
        # A short batch delay only makes the test quicker; the count is what matters.
        env = {**tracing_env(sink.endpoint), "OTEL_BSP_SCHEDULE_DELAY": "100"}
        replica = start_echo_server(bare=False, env=env)
        call_echo(replica.grpc_addr, CALLS)
        assert sink.spans.wait_for(CALLS, ("echo",), timeout_s=30) >= CALLS
        # Health checks are not traced, so once stopped (spans flushed) it is exactly CALLS.
        assert stop_echoes([replica]) == {replica.pod: 0}
        assert sink.spans.counts() == {"echo": CALLS}


def test_runtime_echo_with_telemetry_off_exports_nothing(
    start_echo_server: StartEchoServer,
) -> None:
    with OtlpSink() as sink:
        # Telemetry off wins even with an endpoint configured.
        env = {**tracing_env(sink.endpoint), **TELEMETRY_OFF}
        replica = start_echo_server(bare=False, env=env)
        call_echo(replica.grpc_addr, CALLS)
        assert stop_echoes([replica]) == {replica.pod: 0}
        assert sink.spans.total() == 0
