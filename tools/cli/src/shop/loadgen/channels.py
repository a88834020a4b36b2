"""Client channels for a load run, and the check that the target answers at all.

The load generator plays a *client*, so by default it behaves like a naive one:
pick_first, no retries, no health checking. That is what exposes the per-connection
balancing problem the project is about. Each channel gets its own subchannel pool;
otherwise gRPC shares connections between channels with identical arguments and
``--channels 4`` would still use one connection per backend.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import grpc

LB_POLICIES = ("pick_first", "round_robin")


class ConnectError(RuntimeError):
    """The target did not become reachable in time (one clear line for the user)."""


def channel_options(lb_policy: str) -> list[tuple[str, Any]]:
    if lb_policy not in LB_POLICIES:
        raise ValueError(f"lb_policy must be one of {LB_POLICIES}, got {lb_policy!r}")
    config: dict[str, Any] = {"loadBalancingConfig": [{lb_policy: {}}]}
    return [
        ("grpc.service_config", json.dumps(config)),
        # DNS TXT records must not override the policy under test.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.use_local_subchannel_pool", 1),
    ]


def open_channels(target: str, count: int, lb_policy: str) -> list[grpc.aio.Channel]:
    """``count`` independent channels to ``target``; call inside a running event loop."""
    options = channel_options(lb_policy)
    return [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]


async def wait_connected(
    channels: Sequence[grpc.aio.Channel], target: str, timeout_s: float
) -> None:
    """Waits until every channel has a connection, or raises :class:`ConnectError`.

    Without this an unreachable target would show up as a run full of UNAVAILABLE
    calls (or a wall of deadline errors) instead of one line saying what is wrong.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(channel.channel_ready() for channel in channels))
    except TimeoutError:
        raise ConnectError(
            f"cannot connect to {target} within {timeout_s:g}s "
            "(is the shop running? `shop up` starts one)"
        ) from None


async def close_channels(channels: Sequence[grpc.aio.Channel]) -> None:
    await asyncio.gather(*(channel.close() for channel in channels))
