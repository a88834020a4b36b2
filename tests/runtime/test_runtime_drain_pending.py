"""Calls that reach a replica as it stops, before any handler took them.

grpc.aio takes calls off gRPC core's pending queue one at a time on the server's
event loop, so a call that arrives while the loop is busy waits there.
``server.stop()`` kills that queue before it sends GOAWAY, and the killed calls end
CANCELLED, not UNAVAILABLE (https://github.com/grpc/grpc/issues/41785). A pick_first
client behind an L4 proxy (a ClusterIP Service) does not watch health, so it keeps
sending to a draining replica until that GOAWAY: no drain delay keeps those calls
away. The shop's channels therefore retry CANCELLED (``shop.runtime.channels``), at
the hop that met it only.

To make the race certain rather than likely, a drain callback keeps the replica's
event loop busy, as a loaded replica's is, until the load's calls have arrived;
``server.stop`` follows the callbacks without yielding to the loop. The load runs in
threads with grpcio's synchronous client, so it goes on sending while the loop is
blocked. Replicas are the runtime's own ``serve``, the callers real grpcio channels,
the L4 proxy a TCP forwarder (tests/support/tcp_proxy.py).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest

from shop.runtime import Runtime
from shop.runtime.channels import build_channel, channel_options
from shop.runtime.config import ChannelConfig
from shop.runtime.metrics import RpcMetrics
from shop.runtime.server import ServiceSetup

from ..support.servers import InProcessServer, StartServer, open_methods
from ..support.tcp_proxy import TcpProxy
from ..support.waiting import wait_until_async

SERVICE = "test.v1.Drained"
METHOD = f"/{SERVICE}/Call"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
# SHOP_RETRY_MAX_ATTEMPTS' default: what build_channel and channel_options configure.
ATTEMPTS = 4
# Calls in flight at once. At most one of them can be matched to the request the
# server keeps open, the others wait in the pending queue and are killed at the stop.
# Each kill spends one of the channel's retry tokens (retryThrottling {100, 0.1}:
# retried through 50 failed attempts in a row). Sixteen in flight, the lab's events
# run, are all cut at once and must all be retried (with gRFC A6's example of 10
# tokens, the fifth and later were not).
WORKERS = 16
# Nothing in Python sees a call reach gRPC core's pending queue: once every call of
# the load is out, the busy loop leaves their bytes this long to cross loopback (well
# under a millisecond on an idle machine).
SETTLE_S = 0.3
# Every wait here is for a condition; this bounds those that never come true.
TIMEOUT_S = 30.0
# For a retry that must not come: the first back-off is at most initialBackoff
# (0.05 s); a busy machine may take longer to send it.
RETRY_WINDOW_S = 1.0
# Calls served before a replica drains and after, to know the load runs.
SERVED = 20


class Load:
    """Unary calls sent back to back from ``WORKERS`` threads until stopped.

    grpcio's synchronous client sends from threads of its own, so calls go on arriving
    at a replica whose event loop is blocked. Stopping joins the threads off the event
    loop: the calls they wait for may need that loop to be answered."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._call = channel.unary_unary(METHOD)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._issued = 0
        self._answered = 0
        self._codes: collections.Counter[grpc.StatusCode] = collections.Counter()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(WORKERS)]

    async def __aenter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                # Every call has a deadline shorter than this.
                await asyncio.to_thread(thread.join, TIMEOUT_S)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"

    def count(self, code: grpc.StatusCode) -> int:
        with self._changed:
            return self._codes[code]

    def failures(self) -> dict[str, int]:
        with self._changed:
            return {c.name: n for c, n in self._codes.items() if c != grpc.StatusCode.OK}

    def wait_all_out(self) -> bool:
        """Blocks the calling thread until every worker waits for an answer."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._issued - self._answered >= WORKERS, timeout=TIMEOUT_S
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                self._issued += 1
                self._changed.notify_all()
            try:
                self._call(b"", timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            with self._changed:
                self._answered += 1
                self._codes[code] += 1
                self._changed.notify_all()


@dataclasses.dataclass
class BusyAtStop:
    """A drain callback that blocks the event loop until every call of the load is
    out, plus time to arrive. Those answered before the loop stopped came back, so the
    ones out arrived at a loop that took none of them: gRPC core matched at most one
    to the request the server keeps open, the rest wait in the pending queue, where
    ``server.stop`` (called right after the callbacks) finds them."""

    load: Load | None = None
    ran: bool = False

    def __call__(self) -> None:
        assert self.load is not None, "the load starts before the replica drains"
        # Blocking on purpose: the replica's loop accepts nothing meanwhile.
        assert self.load.wait_all_out(), "the load stopped sending"
        time.sleep(SETTLE_S)
        self.ran = True


def _setup(runtimes: list[Runtime], busy: BusyAtStop | None = None) -> ServiceSetup:
    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        runtimes.append(runtime)
        if busy is not None:
            runtime.on_drain(busy)
        cancelled_once: set[bytes] = set()

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            # b"cancel": what a stopping replica answers a call, every time;
            # b"cancel-once:<id>": the first attempt of call <id> only.
            if request == b"cancel" or (
                request.startswith(b"cancel-once:") and request not in cancelled_once
            ):
                cancelled_once.add(request)
                await context.abort(grpc.StatusCode.CANCELLED, "replica stopping")
            if request == b"hang":
                await asyncio.Event().wait()
            return b"ok"

        handlers = {"Call": grpc.unary_unary_rpc_method_handler(call)}
        runtime.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        open_methods(runtime, SERVICE, handlers)
        yield (SERVICE,)

    return setup


def _relay_setup(runtimes: list[Runtime], downstream: str) -> ServiceSetup:
    """A service that calls ``downstream`` through its runtime channel, as orders
    calls inventory, and answers what it got."""

    @asynccontextmanager
    async def setup(runtime: Runtime) -> AsyncIterator[Sequence[str]]:
        runtimes.append(runtime)
        relayed = runtime.channel(f"ipv4:{downstream}", SERVICE).unary_unary(METHOD)

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            answer: bytes = await relayed(request)
            return answer

        handlers = {"Call": grpc.unary_unary_rpc_method_handler(call)}
        runtime.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        open_methods(runtime, SERVICE, handlers)
        yield (SERVICE,)

    return setup


def _sample(runtime: Runtime, family: str, **labels: str) -> float:
    names = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Call", **labels}
    return runtime.metrics.registry.get_sample_value(family, names) or 0.0


def _started(runtime: Runtime) -> float:
    return _sample(runtime, "grpc_server_started_total")


def _retried(runtime: Runtime) -> float:
    return _sample(runtime, "grpc_server_retried_total")


async def _start(
    start_server: StartServer, name: str, busy: BusyAtStop | None = None
) -> tuple[InProcessServer, Runtime]:
    runtimes: list[Runtime] = []
    # A drain delay short for a test; a grace far longer than any call here takes.
    server = await start_server(
        "drained", _setup(runtimes, busy), pod_name=name, drain_delay_s=0.2, shutdown_grace_s=5.0
    )
    (runtime,) = runtimes
    return server, runtime


@asynccontextmanager
async def _shop_channel(address: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel as a shop service builds it: retry policy, throttling, interceptors."""
    config = ChannelConfig.from_env({})
    assert config.retry_max_attempts == ATTEMPTS
    metrics = RpcMetrics.create("caller", "caller-0")
    async with build_channel(f"ipv4:{address}", config, SERVICE, metrics, None) as channel:
        yield channel


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# --- the cause ----------------------------------------------------------------------


async def test_calls_pending_at_the_stop_end_cancelled_without_reaching_a_handler(
    start_server: StartServer,
) -> None:
    """No retries: a plain channel straight to the draining replica."""
    busy = BusyAtStop()
    server, runtime = await _start(start_server, "drained-0", busy)
    with grpc.insecure_channel(server.address) as channel:
        async with Load(channel) as load:
            busy.load = load
            await wait_until_async(lambda: load.count(grpc.StatusCode.OK) >= SERVED, "calls")
            server.shutdown.trigger("test: rollout")
            await wait_until_async(server.task.done, "the replica stopped", TIMEOUT_S)
    assert busy.ran
    ok, cancelled = load.count(grpc.StatusCode.OK), load.count(grpc.StatusCode.CANCELLED)
    # Calls sent after the stop find the port closed: UNAVAILABLE, which channels retry.
    assert set(load.failures()) <= {"CANCELLED", "UNAVAILABLE"}, load.failures()
    assert cancelled >= 1, (
        f"no call ended CANCELLED ({load.failures()}): if grpc answers UNAVAILABLE now "
        "(grpc/grpc#41785 fixed), shop.runtime.channels need not retry CANCELLED"
    )
    # Every call a handler took was answered OK: the CANCELLED ones never reached one.
    assert _started(runtime) == ok
    assert _sample(runtime, "grpc_server_handled_total", grpc_code="OK") == ok


async def test_a_downstream_cancelled_is_retried_at_its_hop_and_passed_up_unretried(
    start_server: StartServer,
) -> None:
    """Orders -> inventory: the relay's channel retries a replica's CANCELLED; what it
    still gets it passes up as CANCELLED with the pushback, so its caller's channel
    (which retries CANCELLED too) does not retry the relay."""
    backend, backend_runtime = await _start(start_server, "drained-0")
    relays: list[Runtime] = []
    relay = await start_server("relay", _relay_setup(relays, backend.address))
    (relay_runtime,) = relays
    async with _shop_channel(relay.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(METHOD)(b"cancel", timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.CANCELLED
    assert dict(error.trailing_metadata() or ())[RETRY_PUSHBACK_KEY] == "-1"
    assert (_started(backend_runtime), _retried(backend_runtime)) == (ATTEMPTS, ATTEMPTS - 1)
    assert (_started(relay_runtime), _retried(relay_runtime)) == (1, 0)


# --- the retry: counted, and only for what the server said -------------------------------


async def test_a_retried_cancelled_attempt_is_counted_as_a_retry(
    start_server: StartServer,
) -> None:
    server, runtime = await _start(start_server, "drained-0")
    async with _shop_channel(server.address) as channel:
        answer = await channel.unary_unary(METHOD)(b"cancel-once:1", timeout=10)
    assert answer == b"ok"
    assert (_started(runtime), _retried(runtime)) == (2, 1)
    assert _sample(runtime, "grpc_server_handled_total", grpc_code="CANCELLED") == 1
    assert _sample(runtime, "grpc_server_handled_total", grpc_code="OK") == 1


async def test_the_callers_own_cancellation_and_deadline_are_not_retried(
    start_server: StartServer,
) -> None:
    server, runtime = await _start(start_server, "drained-0")

    def in_flight() -> float:
        return _sample(runtime, "grpc_server_in_flight")

    async with _shop_channel(server.address) as channel:
        call = channel.unary_unary(METHOD)(b"hang", timeout=10)
        await wait_until_async(lambda: in_flight() == 1, "the call reached its handler")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await wait_until_async(lambda: in_flight() == 0, "the handler saw the cancellation")

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(METHOD)(b"hang", timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until_async(lambda: in_flight() == 0, "the handler saw the deadline")
        # A retry would be on its way within the first back-off: nothing to wait on.
        await asyncio.sleep(RETRY_WINDOW_S)
    assert (_started(runtime), _retried(runtime)) == (2, 0)


# --- the whole drain through an L4 proxy ---------------------------------------------


async def test_no_caller_sees_a_failure_when_a_busy_replica_drains_behind_an_l4_proxy(
    start_server: StartServer,
) -> None:
    """ClusterIP: one connection through the proxy, pick_first, no health checking.
    The endpoint leaves the proxy (new connections go to the other replica) as the
    replica drains; the calls it killed at the stop are retried there, counted there."""
    busy = BusyAtStop()
    leaving, leaving_runtime = await _start(start_server, "drained-0", busy)
    staying, staying_runtime = await _start(start_server, "drained-1")
    proxy = TcpProxy(*_host_port(leaving.address)).start()
    try:
        config = dataclasses.replace(ChannelConfig.from_env({}), lb_policy="pick_first")
        assert config.retry_max_attempts == ATTEMPTS
        target = f"ipv4:{proxy.host}:{proxy.port}"
        # The runtime's channel settings on grpcio's synchronous client (see Load).
        with grpc.insecure_channel(target, options=channel_options(config, target, SERVICE)) as (
            channel
        ):
            async with Load(channel) as load:
                busy.load = load
                await wait_until_async(
                    lambda: _started(leaving_runtime) >= SERVED, "calls to the leaving replica"
                )
                # kube-proxy drops a terminating pod's endpoint: new connections go
                # elsewhere, the open one stays with the draining replica until it ends.
                proxy.upstream = _host_port(staying.address)
                leaving.shutdown.trigger("test: rollout")
                await wait_until_async(leaving.task.done, "the leaving replica stopped", TIMEOUT_S)
                served = _started(staying_runtime)
                await wait_until_async(
                    lambda: _started(staying_runtime) >= served + SERVED,
                    "calls to the staying replica",
                )
    finally:
        proxy.close()
    assert busy.ran
    assert load.failures() == {}, f"callers saw failures: {load.failures()}"
    # The calls killed at the stop arrived at the staying replica as retries.
    assert _retried(staying_runtime) >= 1
    assert _retried(leaving_runtime) == 0
