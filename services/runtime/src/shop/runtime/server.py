"""Server bootstrap shared by every service: one call runs a service to completion.

``run_service`` validates configuration, starts the grpc.aio server with health,
reflection, metrics and tracing, marks the service SERVING, and on SIGTERM/SIGINT
hands over to ``shop.runtime.shutdown``, the home of the whole stop sequence
(drain, end streams, stop with a grace, release).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shop.runtime.auth.internal import CallerTokens
from shop.runtime.auth.policy import AccessPolicy
from shop.runtime.channels import build_channel
from shop.runtime.config import AuthConfig, ChannelConfig, ConfigError, ServerConfig, StartupError
from shop.runtime.health import HealthService
from shop.runtime.interceptors import ServerInterceptor
from shop.runtime.listening import listen_problem
from shop.runtime.logs import configure_logging
from shop.runtime.metrics import RpcMetrics
from shop.runtime.orca import LoadReporter
from shop.runtime.shutdown import DrainCallbacks, ShutdownSignal, drain_and_stop, release
from shop.runtime.tracing import Tracing

log = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2
EXIT_STARTUP_ERROR = 1


@dataclass
class Runtime:
    """What a service's setup code gets: its config and ways to reach other services."""

    service: str
    config: ServerConfig
    server: grpc.aio.Server
    metrics: RpcMetrics
    tracing: Tracing
    # Who may call this service's methods: its setup declares the rules.
    access: AccessPolicy
    _channels: list[grpc.aio.Channel] = field(default_factory=list)
    _caller_tokens: CallerTokens | None = None
    _drain: DrainCallbacks = field(default_factory=DrainCallbacks)

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` when the drain delay is over, right before
        ``server.stop(grace)``: the moment for a service to end its long-lived streams
        with OK. Every client has seen NOT_SERVING by then, so one that subscribes
        again lands on another replica; left open, the stop would cut them after the
        grace with CANCELLED. The callback must not block (set an event, cancel a
        call); the handlers it wakes finish during the stop's grace. Registered
        after that moment, it runs at once."""
        self._drain.add(callback)

    def channel(self, target: str, health_service: str) -> grpc.aio.Channel:
        """A channel to another shop service; its calls carry this service's caller
        token for ``health_service`` (the callee's full gRPC service name)."""
        if self._caller_tokens is None:
            self._caller_tokens = self.access.caller_tokens()
        channel = build_channel(
            target,
            ChannelConfig.from_env(),
            health_service,
            self.metrics,
            self.tracing.tracer if self.tracing.enabled else None,
            functools.partial(self._caller_tokens.token, health_service),
            self.tracing.fast,
        )
        self._channels.append(channel)
        return channel

    async def close_channels(self) -> None:
        for channel in self._channels:
            await channel.close()


# A setup function registers servicers on ``runtime.server`` and yields the full
# names of the gRPC services it added; code after the yield runs on shutdown.
ServiceSetup = Callable[[Runtime], AbstractAsyncContextManager[Sequence[str]]]


def server_options(config: ServerConfig) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        # Replicas of a service share a port on different IPs; never share one socket.
        ("grpc.so_reuseport", 0),
    ]
    if config.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.max_connection_age_grace_s * 1000)),
        ]
    if config.keepalive_time_s > 0:
        keepalive_ms = int(config.keepalive_time_s * 1000)
        options += [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", 10_000),
            # Accept client pings at the rate our own clients send them.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", keepalive_ms // 2),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    return options


async def serve(
    service: str, setup: ServiceSetup, config: ServerConfig, shutdown: ShutdownSignal
) -> None:
    metrics = RpcMetrics.create(service, config.pod_name, config.mode)
    tracing = Tracing(service, config.pod_name)
    access = AccessPolicy(service, AuthConfig.from_env())
    server = grpc.aio.server(
        interceptors=[
            ServerInterceptor(
                service,
                config.pod_name,
                metrics,
                tracing.tracer if tracing.enabled else None,
                access,
                tracing.fast,
                LoadReporter() if config.orca_reports else None,
                config.fault_status,
            ),
        ],
        options=server_options(config),
    )
    runtime = Runtime(service, config, server, metrics, tracing, access)
    health = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    runtime.on_drain(health.end_watches)
    try:
        async with setup(runtime) as service_names:
            reflection.enable_server_reflection(
                (
                    *service_names,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
            # Every rule the setup declared must be enforceable before anyone connects.
            await access.load()
            # Probed first: grpc's own bind failure also prints a core log line.
            problem = listen_problem(config.listen_addr)
            try:
                if problem is None:
                    server.add_insecure_port(config.listen_addr)
            except RuntimeError:
                problem = "address in use or not local"
            if problem is not None:
                raise ConfigError(
                    f"SHOP_LISTEN_ADDR={config.listen_addr!r}: cannot listen there ({problem})"
                )
            # Metrics bind before the gRPC server starts: a server left running by a
            # failed start-up would outlive the event loop.
            if config.metrics_addr:
                try:
                    metrics.serve(config.metrics_addr)
                except OSError as exc:
                    raise ConfigError(
                        f"SHOP_METRICS_ADDR={config.metrics_addr!r}: "
                        f"cannot listen there ({exc.strerror})"
                    ) from None
            await server.start()
            for name in ("", *service_names):
                await health.set(name, health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "serving",
                extra={"listen": config.listen_addr, "metrics": config.metrics_addr or None},
            )
            if config.fault_status is not None:
                log.warning("fault injection on: every call ends with %s", config.fault_status.name)
            reason = await shutdown.wait()
            await drain_and_stop(
                server,
                health,
                runtime._drain,
                reason=reason,
                drain_delay_s=config.drain_delay_s,
                shutdown_grace_s=config.shutdown_grace_s,
            )
    finally:
        await release(server, runtime.close_channels, tracing.shutdown)
    log.info("stopped")


def read_config(environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The server's settings; client settings are validated too, so a bad one stops
    the process before it serves rather than at its first downstream call."""
    config = ServerConfig.from_env(environ)
    ChannelConfig.from_env(environ)
    AuthConfig.from_env(environ)
    return config


def run_service(service: str, setup: ServiceSetup) -> None:
    """Entry point of a service process: validated config, serve until signalled, exit."""
    try:
        config = read_config()
    except ConfigError as error:
        print(f"{service}: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    configure_logging(service, config.pod_name, config.log_level)
    if config.use_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            log.warning("uvloop requested but not installed; using asyncio's loop")

    async def main() -> None:
        shutdown = ShutdownSignal()
        shutdown.install()
        await serve(service, setup, config, shutdown)

    try:
        asyncio.run(main())
    except ConfigError as error:
        print(f"{service}: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except StartupError as error:
        # Exit non-zero so the orchestrator restarts the pod and shows the reason.
        print(f"{service}: cannot start: {error}", file=sys.stderr)
        raise SystemExit(EXIT_STARTUP_ERROR) from None
