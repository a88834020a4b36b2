"""Client channel settings: balancing, client-side health checks, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from typing import Any

import pytest

from shop.runtime.channels import build_channel, channel_options, service_config
from shop.runtime.config import ChannelConfig, OutlierDetection
from shop.runtime.metrics import RpcMetrics

from ..support.servers import WHO, StartServer, who_setup

BASE = ChannelConfig.from_env({})


def _config(**changes: Any) -> ChannelConfig:
    return dataclasses.replace(BASE, **changes)


def test_round_robin_with_health_check_and_retries() -> None:
    document = service_config(BASE, "dns:///orders.shop:50051", "shop.v1.Orders")
    assert document["loadBalancingConfig"] == [{"round_robin": {}}]
    assert document["healthCheckConfig"] == {"serviceName": "shop.v1.Orders"}
    (method,) = document["methodConfig"]
    assert method["name"] == [{}]  # every method of the channel
    assert method["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
    }
    # gRFC A6 throttling: in an outage retries stop once most attempts fail.
    assert document["retryThrottling"] == {"maxTokens": 100, "tokenRatio": 0.1}


def test_retry_attempts_follow_config() -> None:
    document = service_config(_config(retry_max_attempts=2), "ipv4:127.0.0.1:1", "s")
    assert document["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 2


def test_one_attempt_means_no_retry_policy() -> None:
    # gRPC rejects maxAttempts < 2, and with it the whole service config.
    document = service_config(_config(retry_max_attempts=1), "ipv4:127.0.0.1:1", "s")
    assert document["methodConfig"] == [{"name": [{}]}]
    assert "retryThrottling" not in document


def test_pick_first_has_no_health_check() -> None:
    document = service_config(_config(lb_policy="pick_first"), "orders:50051", "shop.v1.Orders")
    assert document["loadBalancingConfig"] == [{"pick_first": {}}]
    assert "healthCheckConfig" not in document


def test_health_check_can_be_turned_off() -> None:
    document = service_config(_config(client_health_check=False), "orders:50051", "x")
    assert document["loadBalancingConfig"] == [{"round_robin": {}}]
    assert "healthCheckConfig" not in document


@pytest.mark.parametrize("lb_policy", ["round_robin", "pick_first"])
def test_xds_target_leaves_balancing_to_the_control_plane(lb_policy: str) -> None:
    document = service_config(
        _config(lb_policy=lb_policy), "xds:///orders.shop.svc.cluster.local:50051", "x"
    )
    assert "loadBalancingConfig" not in document
    assert "healthCheckConfig" not in document
    # Retries still apply: they are per method, not part of balancing.
    assert document["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == [
        "UNAVAILABLE",
        "CANCELLED",
    ]


def test_channel_options() -> None:
    options = dict(
        channel_options(_config(dns_min_reresolution_s=1.5), "dns:///orders:50051", "svc")
    )
    assert json.loads(options["grpc.service_config"]) == service_config(
        _config(dns_min_reresolution_s=1.5), "dns:///orders:50051", "svc"
    )
    assert options["grpc.service_config_disable_resolution"] == 1
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.dns_min_time_between_resolutions_ms"] == 1500
    assert options["grpc.keepalive_time_ms"] == 30_000


def test_keepalive_off_sets_no_keepalive_options() -> None:
    options = dict(channel_options(_config(keepalive_time_s=0), "orders:50051", "svc"))
    assert not any(key.startswith("grpc.keepalive") for key in options)


# --- the service config at work, against real servers ------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"retry_max_attempts": 1},
        {"retry_max_attempts": 5},
        {"lb_policy": "pick_first"},
        {"client_health_check": False},
        {"lb_policy": "weighted_round_robin"},
        {
            "lb_policy": "weighted_round_robin",
            "outlier_detection": OutlierDetection(10, 30, 10, 85, 5, 50),
        },
        {"outlier_detection": OutlierDetection(0.5, 1.5, 100, 1, 1, 1)},
    ],
    ids=lambda changes: ",".join(f"{k}={v}" for k, v in changes.items()) or "defaults",
)
async def test_grpc_accepts_the_service_config(
    start_server: StartServer, changes: dict[str, Any]
) -> None:
    """A service config gRPC rejects fails every call on the channel: make real calls."""
    server = await start_server("who", who_setup())
    config = _config(**changes)
    channel = build_channel(
        f"ipv4:{server.address}", config, WHO, RpcMetrics.create("c", "c-0"), tracer=None
    )
    async with channel:
        assert await channel.unary_unary(f"/{WHO}/Who")(b"", timeout=10) == b"who-0"


@pytest.mark.parametrize("lb_policy", ["round_robin", "weighted_round_robin"])
async def test_round_robin_skips_a_draining_backend(
    start_server: StartServer, lb_policy: str
) -> None:
    """A backend whose health says NOT_SERVING gets no new calls while it is still up
    (weighted_round_robin honours client health checks as round_robin does)."""
    a = await start_server("a", who_setup(), pod_name="a-0", drain_delay_s=5.0)
    b = await start_server("b", who_setup(), pod_name="b-0")
    channel = build_channel(
        f"ipv4:{a.address},{b.address}",
        _config(lb_policy=lb_policy),
        WHO,
        RpcMetrics.create("client", "client-0"),
        tracer=None,
    )
    async with channel:
        who = channel.unary_unary(f"/{WHO}/Who")
        served: Counter[bytes] = Counter()
        deadline = time.monotonic() + 15
        while len(served) < 2:  # until both subchannels are READY
            assert time.monotonic() < deadline, f"not balanced: {served}"
            served[await who(b"", timeout=5)] += 1
        balanced = Counter([await who(b"", timeout=5) for _ in range(20)])
        if lb_policy == "round_robin":
            assert balanced == {b"a-0": 10, b"b-0": 10}
        else:  # both report the same (one process): about even, from a random start
            assert set(balanced) == {b"a-0", b"b-0"} and min(balanced.values()) >= 5, balanced

        a.shutdown.trigger("test")  # a: NOT_SERVING, then 5 s of drain
        deadline = time.monotonic() + 3.5
        while (await who(b"", timeout=5)) == b"a-0":
            assert time.monotonic() < deadline, "client kept picking the draining backend"
            await asyncio.sleep(0.02)
        after = Counter([await who(b"", timeout=5) for _ in range(20)])
        assert after == {b"b-0": 20}
        assert not a.task.done(), "a should still be up, inside its drain delay"
