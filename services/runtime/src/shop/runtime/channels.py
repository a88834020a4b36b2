"""Client channels to the next hop, built in one place.

The service config carries the load-balancing policy, client-side health checking
(round_robin then skips a backend as soon as its health service says NOT_SERVING,
which is what lets a draining replica leave without failed calls) and a retry
policy for UNAVAILABLE and CANCELLED (:data:`RETRYABLE_STATUS_CODES` says why
CANCELLED). Retries are safe because every mutating call in the shop is idempotent
(reservation ids, idempotency keys).

Retries happen at one hop only: the channel that met the failure retries it, and a
server passing a downstream UNAVAILABLE or CANCELLED up sends
``grpc-retry-pushback-ms: -1`` (``shop.runtime.errors.abort_with``) so the channel
above does not retry it again.
Retry throttling (gRFC A6) stops retries altogether once 50 attempts in a row to a
target have failed, so an outage soon costs each call one attempt, not ``maxAttempts``
(:data:`RETRY_THROTTLING`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import trace

from shop.runtime.config import ChannelConfig
from shop.runtime.errors import RETRYABLE_CODES
from shop.runtime.interceptors import StreamClientInterceptor, UnaryClientInterceptor
from shop.runtime.metrics import RpcMetrics
from shop.runtime.sampling import FastSampling

# gRFC A6 throttling, per channel: each failed attempt takes a token, each success gives
# back 0.1, and nothing is retried while half of maxTokens or fewer remain. The bucket
# is sized for the burst a rollout causes, not only for outages: a stopping replica can
# cut every call one channel has queued at it at once (see below), and each must be
# retried, so maxTokens / 2 must exceed the calls a channel has in flight at one replica
# (the lab's: 16). 100 retries up to 50 failed attempts in a row; then, in an outage,
# each call gets one attempt until successes refill the bucket.
RETRY_THROTTLING = {"maxTokens": 100, "tokenRatio": 0.1}

# The retry policy's codes, ``shop.runtime.errors.RETRYABLE_CODES``:
#
# UNAVAILABLE: the callee could not be reached or had no healthy replica.
#
# CANCELLED: a replica that stops answers CANCELLED to the calls that had reached it
# but not yet a handler. grpc.aio takes calls off gRPC core's pending queue one at a
# time on the event loop, so a busy replica has some waiting there, and
# ``server.stop()`` kills that queue before it sends GOAWAY
# (https://github.com/grpc/grpc/issues/41785). The drain cannot prevent it for every
# client: a pick_first channel through an L4 proxy (a ClusterIP Service) has no
# health checking and keeps sending to the draining replica until that very GOAWAY,
# and grpc.aio offers no GOAWAY without the stop. So the channel retries, and a
# retried CANCELLED is safe here:
# - gRPC retries only a status the server (or a proxy) sent. A call this process
#   cancels itself (``call.cancel()``, a cancelled task, a closed channel) is never
#   retried, and a deadline ends the call as DEADLINE_EXCEEDED, which is not retried:
#   the overall deadline bounds every attempt.
# - A CANCELLED from a stopping replica means no handler ran (the pending queue) or a
#   handler was cut after the stop's grace; every shop method is idempotent, so the
#   next attempt cannot apply anything twice.
# - A shop server never answers CANCELLED for its own reasons; one passing a
#   downstream CANCELLED up forbids retries above (``errors.abort_with``), so a call
#   is retried at the hop that met the failure only.
# Istio's default retry policy retries ``cancelled`` too. RETRY_THROTTLING bounds it
# like any retry, and is sized so that the calls one stop cuts at once are all
# retried (with gRFC A6's example of 10 tokens, the fifth and later were not: the lab's
# clusterip rollout lost 6 calls that way). ``xds:///`` channels ignore this policy and
# take the route's from the control plane, which lists ``cancelled`` as well.
RETRYABLE_STATUS_CODES = [code.name for code in RETRYABLE_CODES]


def service_config(config: ChannelConfig, target: str, health_service: str) -> dict[str, Any]:
    """The JSON service config for a channel to ``target``."""
    method: dict[str, Any] = {"name": [{}]}
    # One attempt means no retries; gRPC rejects a retryPolicy with maxAttempts < 2
    # (and with it the whole service config, failing every call).
    if config.retry_max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": config.retry_max_attempts,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": list(RETRYABLE_STATUS_CODES),
        }
    document: dict[str, Any] = {"methodConfig": [method]}
    if "retryPolicy" in method:
        document["retryThrottling"] = dict(RETRY_THROTTLING)
    if not target.startswith("xds:"):
        # With xds:/// targets the control plane chooses the policy.
        document["loadBalancingConfig"] = [balancing_config(config)]
        if config.lb_policy in HEALTH_CHECKING_POLICIES and config.client_health_check:
            document["healthCheckConfig"] = {"serviceName": health_service}
    return document


# The policies that balance over many backends and so can skip an unhealthy one
# (pick_first has one connection at a time: nothing to skip to).
HEALTH_CHECKING_POLICIES = ("round_robin", "weighted_round_robin")


def balancing_config(config: ChannelConfig) -> dict[str, Any]:
    """One ``loadBalancingConfig`` entry: the policy, inside outlier detection if on."""
    policy: dict[str, Any] = {}
    if config.lb_policy == "weighted_round_robin":
        # Weights come from the ORCA reports on each answer (shop.runtime.orca), not
        # from a separate out-of-band stream, which grpcio servers cannot serve.
        policy = {
            "blackoutPeriod": duration(config.wrr.blackout_s),
            "errorUtilizationPenalty": config.wrr.error_penalty,
        }
    entry: dict[str, Any] = {config.lb_policy: policy}
    outliers = config.outlier_detection
    if outliers is None:
        return entry
    # Still "_experimental" in gRPC's registry (C core, Python and Node alike).
    return {
        "outlier_detection_experimental": {
            "interval": duration(outliers.interval_s),
            "baseEjectionTime": duration(outliers.base_ejection_s),
            "maxEjectionPercent": outliers.max_ejection_percent,
            "failurePercentageEjection": {
                "threshold": outliers.failure_percent,
                "enforcementPercentage": 100,
                "minimumHosts": outliers.min_hosts,
                "requestVolume": outliers.request_volume,
            },
            "childPolicy": [entry],
        }
    }


def duration(seconds: float) -> str:
    """A service config duration ("1.5s"): protobuf's JSON form, nanosecond precision."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def channel_options(
    config: ChannelConfig, target: str, health_service: str
) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(service_config(config, target, health_service))),
        # A malformed DNS TXT record would otherwise replace our service config.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        ("grpc.dns_min_time_between_resolutions_ms", int(config.dns_min_reresolution_s * 1000)),
        # gRPC's default back-off between connection attempts grows to two minutes.
        # Inside a cluster a backend that went away is usually a pod restarting on
        # the same address, back within seconds: retry connecting at least every
        # second, so it gets calls soon after it is ready (a rollout that then takes
        # the next pod away must not find this client with no backend ready).
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if config.keepalive_time_s > 0:
        options += [
            ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
    return options


def build_channel(
    target: str,
    config: ChannelConfig,
    health_service: str,
    metrics: RpcMetrics,
    tracer: trace.Tracer | None,
    caller_token: Callable[[], str] | None = None,
    fast: FastSampling | None = None,
) -> grpc.aio.Channel:
    """An insecure channel with the shop's interceptors (metrics, spans, deadline, route,
    and this service's caller token when ``caller_token`` is given).

    Plaintext on purpose: inside a mesh the sidecars add mTLS, and the caller token
    proves the calling service's identity either way."""
    interceptors = [
        UnaryClientInterceptor(metrics, tracer, config.downstream_timeout_s, caller_token, fast),
        # No default deadline for streams: a watch lasts until its final state or until
        # the caller leaves; an incoming deadline still applies.
        StreamClientInterceptor(metrics, tracer, 0, caller_token, fast),
    ]
    return grpc.aio.insecure_channel(
        target,
        options=channel_options(config, target, health_service),
        interceptors=interceptors,
    )
