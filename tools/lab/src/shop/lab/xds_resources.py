"""The xDS v3 resources a proxyless gRPC client needs to reach one service.

A gRPC channel to ``xds:///<host>:<port>`` asks for the listener named exactly
``<host>:<port>``. Its API listener carries an HTTP connection manager whose route
configuration is inline (one fewer round trip than RDS, and what gRPC accepts just as
well) and sends every call to one cluster, retrying on UNAVAILABLE. The cluster says
"balance with this policy over the endpoints that EDS gives you over the same ADS
stream"; the endpoints are the replicas that are ready right now. Names follow Istio's
so a reader can compare: cluster ``outbound|<port>||<host>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from shop.lab.endpoints import Endpoint

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINTS = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
# A request naming no resource subscribes to all of them only for these types.
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})

# Attempts per call on UNAVAILABLE, as SHOP_RETRY_MAX_ATTEMPTS's default (every shop
# call is idempotent, so a retry is safe).
RETRY_ATTEMPTS = 4

LB_POLICIES = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
}


def listener_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def cluster_name(host: str, port: int) -> str:
    return f"outbound|{port}||{host}"


def parse_name(type_url: str, name: str) -> tuple[str, int] | None:
    """``(host, port)`` named by a listener or cluster/endpoints resource name."""
    try:
        if type_url == LISTENER:
            host, _, port = name.rpartition(":")
            return host, int(port)
        if type_url in (CLUSTER, ENDPOINTS):
            direction, port, _, host = name.split("|")
            return (host, int(port)) if direction == "outbound" else None
    except ValueError:
        return None
    return None


def resource_name(type_url: str, host: str, port: int) -> str:
    return listener_name(host, port) if type_url == LISTENER else cluster_name(host, port)


def listener(host: str, port: int) -> Any:
    """An API listener (no socket: the gRPC client is the proxy) with an inline route."""
    route_config = route_pb2.RouteConfiguration(
        name=listener_name(host, port),
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=host,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=""),
                        route=route_components_pb2.RouteAction(
                            cluster=cluster_name(host, port), retry_policy=_retry_policy()
                        ),
                    )
                ],
            )
        ],
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=host,
        route_config=route_config,
        # gRPC rejects a listener whose filter chain does not end with the router.
        http_filters=[router_filter()],
    )
    return listener_pb2.Listener(
        name=listener_name(host, port),
        api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager)),
    )


def cluster(host: str, port: int, lb_policy: str) -> Any:
    """An EDS cluster whose endpoints come over the same ADS stream."""
    return cluster_pb2.Cluster(
        name=cluster_name(host, port),
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(),
        ),
        connect_timeout=duration_pb2.Duration(seconds=5),
        lb_policy=LB_POLICIES[lb_policy],
    )


def load_assignment(host: str, port: int, endpoints: Sequence[Endpoint]) -> Any:
    """The ready endpoints, in one locality (gRPC ignores a locality without weight)."""
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address(endpoint.ip, endpoint.port),
                hostname=endpoint.pod,
            ),
            health_status=health_check_pb2.HEALTHY,
        )
        for endpoint in sorted(endpoints)
    ]
    localities = []
    if lb_endpoints:
        localities.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region="lab", zone="lab-a"),
                lb_endpoints=lb_endpoints,
                load_balancing_weight=uint32(1),
                priority=0,
            )
        )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name(host, port), endpoints=localities
    )


def _retry_policy() -> Any:
    """The runtime's retries on UNAVAILABLE and CANCELLED (``shop.runtime.channels``),
    restated for xDS: an ``xds:///`` channel uses the service config its resolver builds,
    so the one the runtime passes is ignored."""
    return route_components_pb2.RetryPolicy(
        retry_on="unavailable,cancelled",
        num_retries=uint32(RETRY_ATTEMPTS - 1),
        retry_back_off=route_components_pb2.RetryPolicy.RetryBackOff(
            base_interval=duration_pb2.Duration(nanos=50_000_000),
            max_interval=duration_pb2.Duration(seconds=1),
        ),
    )


# --- small parts, shared with the sidecars' resources (shop.lab.sidecar_resources) -----


def router_filter() -> Any:
    """The HTTP filter that routes; Envoy and gRPC both want it last in the chain."""
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
    )


def ads_source() -> Any:
    """ "Over the same ADS stream", for resources that refer to others (EDS, SDS)."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def address(ip: str, port: int) -> Any:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def pack(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def uint32(value: int) -> Any:
    return wrappers_pb2.UInt32Value(value=value)
