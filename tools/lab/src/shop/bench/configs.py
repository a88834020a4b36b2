"""What the benchmark compares: ten configurations and the ratios between them.

Each pair in a ratio differs in one thing only, so the ratio is the price of that
thing: the runtime kit (interceptors + Prometheus metrics, which are always on in
the runtime), then tracing on one hop (every call, no call sampled, and the chart's 10% sampling),
then tracing on the whole shop. More ratios set the whole PlaceOrder chain against
one bare hop (what the shop's own work costs beyond gRPC's) and against
``chain-bare``, gRPC's floor for a chain of three: three plain ``grpc.aio`` Echo
servers, each but the last forwarding every call to the next (``python -m
shop.echo --bare --forward``), loaded like ``echo-bare``. Its own ratio to
``echo-bare`` is the best the chain's ratio to one bare hop can get on the machine.

Every configuration but one keeps a fixed number of calls in flight (closed loop):
it measures capacity, and its latency is mostly queueing. ``chain-fixed`` offers
the chain a fixed rate instead (open loop, ``--chain-rate``), below its capacity, so
its latency is what a call costs when it does not queue, and two runs (before and
after a change) compare at the same load whatever their capacities.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class System(Enum):
    """The server side a configuration runs against."""

    ECHO_BARE = "echo-bare"
    ECHO_RUNTIME = "echo-runtime"
    # Bare echo servers in a row, each forwarding to the next: gRPC's chain.
    CHAIN_BARE = "chain-bare"
    CHAIN = "chain"


@dataclass(frozen=True)
class BenchConfig:
    key: str
    title: str
    system: System
    tracing: bool
    # With tracing: the share of calls sampled (parentbased_traceidratio, the chart's
    # sampler); None: every call (parentbased_always_on, the SDK's default).
    sampling: float | None = None
    # Open loop at the run's --chain-rate (calls/s) instead of a fixed concurrency.
    fixed_rate: bool = False
    # The chain's storage: "sqlite" (the embedded default, a file per service) or
    # "postgres" (a local server the bench starts; its CPU counts as the chain's).
    database: str = "sqlite"


@dataclass(frozen=True)
class Ratio:
    key: str
    title: str
    numerator: str
    denominator: str


CONFIGS: tuple[BenchConfig, ...] = (
    BenchConfig("echo-bare", "echo, bare grpc.aio", System.ECHO_BARE, tracing=False),
    BenchConfig("echo-runtime", "echo, runtime", System.ECHO_RUNTIME, tracing=False),
    BenchConfig("echo-traced", "echo, runtime+trace", System.ECHO_RUNTIME, tracing=True),
    # Tracing on with nothing sampled: what the decision and the current span of an
    # unsampled call cost (shop.runtime.sampling), apart from the sampled calls' spans.
    BenchConfig(
        "echo-unsampled",
        "echo, runtime+trace 0%",
        System.ECHO_RUNTIME,
        tracing=True,
        sampling=0.0,
    ),
    BenchConfig(
        "echo-sampled",
        "echo, runtime+trace 10%",
        System.ECHO_RUNTIME,
        tracing=True,
        sampling=0.1,
    ),
    BenchConfig("chain-bare", "3-hop chain, bare grpc.aio", System.CHAIN_BARE, tracing=False),
    BenchConfig("chain", "chain", System.CHAIN, tracing=False),
    BenchConfig("chain-traced", "chain+trace", System.CHAIN, tracing=True),
    BenchConfig("chain-fixed", "chain, fixed rate", System.CHAIN, tracing=False, fixed_rate=True),
    BenchConfig("chain-pg", "chain, PostgreSQL", System.CHAIN, tracing=False, database="postgres"),
)

# Calls/s offered to chain-fixed by default: half of what the chain managed closed
# loop on the 2-core development machine (~200 calls/s, 64 in flight, SQLite through
# SQLAlchemy and aiosqlite), so it holds the rate with room to spare and its latency is
# service time, not a queue. Kept as it is when the chain gets faster: runs compare at
# the same rate.
DEFAULT_CHAIN_RATE = 100.0
# The latency objective chain-fixed's calls are judged by (the lab's objective).
DEFAULT_CHAIN_OBJECTIVE_MS = 250.0
# Servers in chain-bare, like the chain's gateway, orders and inventory.
CHAIN_BARE_HOPS = 3

CONFIG_KEYS = tuple(config.key for config in CONFIGS)

RATIOS: tuple[Ratio, ...] = (
    Ratio("echo_runtime_vs_bare", "echo runtime/bare", "echo-runtime", "echo-bare"),
    Ratio("echo_tracing_on_vs_off", "echo trace on/off", "echo-traced", "echo-runtime"),
    Ratio("echo_unsampled_vs_off", "echo trace 0%/off", "echo-unsampled", "echo-runtime"),
    Ratio("echo_sampled_vs_off", "echo trace 10%/off", "echo-sampled", "echo-runtime"),
    Ratio("chain_tracing_on_vs_off", "chain trace on/off", "chain-traced", "chain"),
    Ratio("chain_vs_echo_bare", "chain/bare echo", "chain", "echo-bare"),
    # What the shop's runtime, storage and saga add over gRPC's own three hops.
    Ratio("chain_vs_chain_bare", "chain/bare 3-hop chain", "chain", "chain-bare"),
    # The best chain/bare echo ratio gRPC allows on this machine.
    Ratio("chain_bare_vs_echo_bare", "bare 3-hop chain/bare echo", "chain-bare", "echo-bare"),
    Ratio("chain_pg_vs_echo_bare", "chain on PostgreSQL/bare echo", "chain-pg", "echo-bare"),
    # calls/s: the share of the closed loop's capacity offered; p50/p99: latency
    # without the queue against with it; CPU per call: at that load against saturated.
    Ratio("chain_fixed_vs_closed", "chain fixed-rate/closed", "chain-fixed", "chain"),
)


def select(keys: list[str] | None) -> tuple[BenchConfig, ...]:
    """The configurations named in ``keys`` (all when None), in the canonical order."""
    if not keys:
        return CONFIGS
    unknown = sorted(set(keys) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown configuration {', '.join(unknown)}: choose from {CONFIG_KEYS}")
    return tuple(config for config in CONFIGS if config.key in keys)
