"""What the benchmark compares: six configurations and the ratios between them.

Each pair in a ratio differs in one thing only, so the ratio is the price of that
thing: the runtime kit (interceptors + Prometheus metrics, which are always on in
the runtime), then tracing on one hop (every call, and the chart's 10% sampling),
then tracing on the whole shop. One more ratio sets the whole PlaceOrder chain
against one bare hop: what the shop's own work costs beyond gRPC's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class System(Enum):
    """The server side a configuration runs against."""

    ECHO_BARE = "echo-bare"
    ECHO_RUNTIME = "echo-runtime"
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
    BenchConfig(
        "echo-sampled",
        "echo, runtime+trace 10%",
        System.ECHO_RUNTIME,
        tracing=True,
        sampling=0.1,
    ),
    BenchConfig("chain", "chain", System.CHAIN, tracing=False),
    BenchConfig("chain-traced", "chain+trace", System.CHAIN, tracing=True),
)

CONFIG_KEYS = tuple(config.key for config in CONFIGS)

RATIOS: tuple[Ratio, ...] = (
    Ratio("echo_runtime_vs_bare", "echo runtime/bare", "echo-runtime", "echo-bare"),
    Ratio("echo_tracing_on_vs_off", "echo trace on/off", "echo-traced", "echo-runtime"),
    Ratio("echo_sampled_vs_off", "echo trace 10%/off", "echo-sampled", "echo-runtime"),
    Ratio("chain_tracing_on_vs_off", "chain trace on/off", "chain-traced", "chain"),
    Ratio("chain_vs_echo_bare", "chain/bare echo", "chain", "echo-bare"),
)


def select(keys: list[str] | None) -> tuple[BenchConfig, ...]:
    """The configurations named in ``keys`` (all when None), in the canonical order."""
    if not keys:
        return CONFIGS
    unknown = sorted(set(keys) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown configuration {', '.join(unknown)}: choose from {CONFIG_KEYS}")
    return tuple(config for config in CONFIGS if config.key in keys)
