"""The servers a benchmark run measures, started once and kept up for every round.

Keeping every configuration's servers up for the whole run (idle ones cost next to
nothing) is what lets the rounds interleave configurations: A B C D A B C D, so a
burst of noise on the shared machine lands on all of them rather than on one.

Layout: the echo servers get the ``echo`` addresses of one loopback net, the bare
chain's three (front first) after the single ones; each chain is a
:class:`LocalCluster` with one replica per service (more replicas would only compete
for the same two cores; the chain measures the cost of the hops, not balancing), on
a net of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shop.api.services import ECHO as ECHO_SERVICE
from shop.api.services import GATEWAY as GATEWAY_SERVICE
from shop.bench.configs import CHAIN_BARE_HOPS, BenchConfig, System
from shop.bench.echo_process import start_echo, stop_echoes, wait_serving
from shop.local.addresses import AddressPlan, free_net
from shop.local.cluster import ClusterSpec, LocalCluster, Replica
from shop.local.lifecycle import StartStop
from shop.local.postgres import PostgresServer, start_postgres

CHAIN_REPLICAS = {"gateway": 1, "orders": 1, "inventory": 1}
CHAIN_SERVICES = ("gateway", "orders", "inventory")

TELEMETRY_OFF = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none"}


def tracing_env(endpoint: str) -> dict[str, str]:
    """Tracing on, every span exported over OTLP/gRPC to ``endpoint``.

    The sampler is left to the caller's ``OTEL_TRACES_SAMPLER`` (default: every call
    traced), so the benchmark can also measure a sampled set-up.
    """
    return {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }


@dataclass(frozen=True)
class Target:
    """Where a configuration's load goes, and which processes serve it."""

    address: str
    # The processes serving it, by name (the pod for an echo server, the pods front
    # first for the bare chain, the service for the chain, which runs one replica of each).
    processes: dict[str, int]
    # The front server's Prometheus address (None for the bare echo, which has none)
    # and the gRPC service whose handled calls it counts there.
    metrics_addr: str | None
    grpc_service: str
    # The demo issuer's key, so the loader can authenticate its customers (the shop
    # chain needs it; the echo servers do not).
    token_key: Path | None = None
    # The database server the chain uses, if it has one (its process and children
    # count in the configuration's CPU: storage work done there is the chain's).
    database_pid: int | None = None

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(self.processes.values())


def span_services(config: BenchConfig) -> tuple[str, ...]:
    """The ``service.name`` values of the spans a configuration's servers export: the
    chain's services, or the echo configuration's own name (every traced echo server
    exports to the same sink, so each needs a name of its own to be counted apart)."""
    return CHAIN_SERVICES if config.system is System.CHAIN else (config.key,)


class Testbed(StartStop):
    """Starts the servers of ``configs``; a context manager that always stops them."""

    def __init__(
        self, configs: tuple[BenchConfig, ...], work_dir: Path, otlp_endpoint: str | None
    ) -> None:
        if otlp_endpoint is None and any(config.tracing for config in configs):
            raise ValueError("a traced configuration needs an OTLP endpoint")
        self._configs = configs
        self._work_dir = work_dir
        self._otlp_endpoint = otlp_endpoint
        self._echoes: dict[str, Replica] = {}
        # chain-bare's servers, front first.
        self._bare_chains: dict[str, list[Replica]] = {}
        self._clusters: dict[str, LocalCluster] = {}
        self._postgres: PostgresServer | None = None

    def _database_url(self, config: BenchConfig) -> str:
        """ "" (each service's SQLite file in its data dir) or a fresh PostgreSQL database."""
        if config.database != "postgres":
            return ""
        if self._postgres is None:
            self._postgres = start_postgres()
        return self._postgres.create_database("bench_" + config.key.replace("-", "_"))

    def _telemetry_env(self, config: BenchConfig) -> dict[str, str]:
        if config.tracing:
            assert self._otlp_endpoint is not None
            env = tracing_env(self._otlp_endpoint)
            if config.sampling is not None:
                env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
                env["OTEL_TRACES_SAMPLER_ARG"] = str(config.sampling)
            return env
        return dict(TELEMETRY_OFF)

    def start(self, timeout_s: float = 90.0) -> None:
        plan = AddressPlan(net=free_net())
        logs = self._work_dir / "logs"
        single = (System.ECHO_BARE, System.ECHO_RUNTIME)
        echo_configs = [c for c in self._configs if c.system in single]
        for index, config in enumerate(echo_configs):
            bare = config.system is System.ECHO_BARE
            env = {} if bare else {**self._telemetry_env(config), "OTEL_SERVICE_NAME": config.key}
            self._echoes[config.key] = start_echo(plan, index, bare, logs, env)
        first_free = len(echo_configs)
        for config in (c for c in self._configs if c.system is System.CHAIN_BARE):
            self._start_bare_chain(config, plan, first_free, logs, timeout_s)
            first_free += CHAIN_BARE_HOPS
        for replica in self._echoes.values():
            wait_serving(replica, timeout_s)
        for config in (c for c in self._configs if c.system is System.CHAIN):
            # The first chain shares the echo net; later ones take a net still free.
            chain_plan = plan if not self._clusters else AddressPlan(net=free_net())
            spec = ClusterSpec(
                replicas=CHAIN_REPLICAS,
                plan=chain_plan,
                data_dir=self._work_dir / config.key,
                drain_delay_s=0.0,
                shutdown_grace_s=2.0,
                extra_env=self._telemetry_env(config),
                database_url=self._database_url(config),
            )
            cluster = LocalCluster(spec)
            self._clusters[config.key] = cluster
            cluster.start(timeout_s)

    def _start_bare_chain(
        self, config: BenchConfig, plan: AddressPlan, first: int, logs: Path, timeout_s: float
    ) -> None:
        """Bare echo servers ``first``, ``first + 1``, ... in a row, each forwarding to the
        next; started last one first, each SERVING before the one that calls it starts."""
        hops = self._bare_chains.setdefault(config.key, [])
        onward: str | None = None
        for index in reversed(range(first, first + CHAIN_BARE_HOPS)):
            replica = start_echo(plan, index, True, logs, {}, forward=onward)
            hops.insert(0, replica)  # kept front first; stop() finds it if the wait fails
            wait_serving(replica, timeout_s)
            onward = replica.grpc_addr

    def target(self, config: BenchConfig) -> Target:
        if config.key in self._bare_chains:
            hops = self._bare_chains[config.key]
            processes = {r.pod: r.process.pid for r in hops if r.process is not None}
            # No metrics endpoint: CPU per call uses the loader's rate, as for echo-bare.
            return Target(hops[0].grpc_addr, processes, None, ECHO_SERVICE)
        if config.key in self._echoes:
            replica = self._echoes[config.key]
            assert replica.process is not None
            metrics = None if config.system is System.ECHO_BARE else replica.metrics_addr
            processes = {replica.pod: replica.process.pid}
            return Target(replica.grpc_addr, processes, metrics, ECHO_SERVICE)
        cluster = self._clusters[config.key]
        processes = {r.service: r.process.pid for r in cluster.replicas if r.process is not None}
        (gateway,) = cluster.replicas_of("gateway")
        return Target(
            cluster.gateway_target,
            processes,
            gateway.metrics_addr,
            GATEWAY_SERVICE,
            cluster.credentials.issuer_key,
            self._postgres.pid if config.database == "postgres" and self._postgres else None,
        )

    def _echo_replicas(self) -> list[Replica]:
        """Every echo server started: the single ones, then the bare chains' hops."""
        hops = [replica for chain in self._bare_chains.values() for replica in chain]
        return [*self._echoes.values(), *hops]

    def dead_servers(self) -> list[str]:
        """Names of servers that exited: a measurement against them would be meaningless."""
        replicas = self._echo_replicas()
        for cluster in self._clusters.values():
            replicas += cluster.replicas
        return [r.pod for r in replicas if not r.alive()]

    def stop(self) -> None:
        """Stops everything (servers flush their spans on the way out)."""
        stop_echoes(self._echo_replicas())
        for cluster in self._clusters.values():
            cluster.stop()
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
