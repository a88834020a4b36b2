"""The xDS resources of one Envoy sidecar: what istiod builds for a pod of the shop.

Per pod (a :class:`SidecarPod`), from the mesh's settings (:mod:`shop.lab.mesh_policy`):

- an **outbound listener per called service** on the pod's own IP. The app dials it
  (pick_first); its route sends every call to the service's outbound cluster with
  Istio's default retries. In a cluster iptables sends the app's connection to the
  service IP to Envoy's port 15001 and Envoy routes by the original destination; the
  lab has no iptables, so each called service has a port of its own instead.
- **outbound clusters** ``outbound|<port>||<host>``: endpoints over EDS, balanced per
  call (LEAST_REQUEST with slow start), outlier detection, HTTP/2, mutual TLS that
  checks the callee's SPIFFE id, per-endpoint request counters.
- an **inbound listener** on port 15006 of the pod's IP: TLS that requires a client
  certificate from the mesh's root (PeerAuthentication STRICT: a plain-text caller
  fails the handshake), the AuthorizationPolicy as an RBAC filter, then the app on the
  pod's IP (as Istio since 1.10 forwards to it) through the ``inbound|<port>||`` cluster.
- the pod's certificate and the root, as SDS secrets ``default`` and ``ROOTCA``
  (Istio's names), sent over the same ADS stream.

The endpoints a sidecar gets for a service are the ready pods' inbound ports (what
iptables would redirect their service port to).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    base_pb2,
    extension_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from shop.lab.endpoints import Endpoint, service_host
from shop.lab.mesh_ca import NAMESPACE, WorkloadCertificate, spiffe_id
from shop.lab.mesh_policy import AccessRule, MeshPolicy
from shop.lab.xds_resources import (
    ENDPOINTS,
    address,
    ads_source,
    cluster_name,
    pack,
    router_filter,
    uint32,
)

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Istio's sidecar ports: admin, inbound capture. Outbound: one per called service here.
ADMIN_PORT = 15000
INBOUND_PORT = 15006
OUTBOUND_PORTS = {"orders": 15001, "inventory": 15002}
CERT_SECRET = "default"
ROOT_SECRET = "ROOTCA"
# Istio lifts Envoy's circuit-breaker defaults (1024 requests per cluster) this high.
_UNLIMITED = 4_294_967_295
_CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)


@dataclass(frozen=True)
class SidecarPod:
    """A pod with a sidecar: its service (and service account), replica index and IP."""

    service: str
    index: int
    ip: str

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def service_account(self) -> str:
        return self.service

    @property
    def node_id(self) -> str:
        """Istio's node id form: ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``."""
        return f"sidecar~{self.ip}~{self.name}.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"

    def outbound_address(self, service: str) -> str:
        return f"{self.ip}:{OUTBOUND_PORTS[service]}"

    @property
    def inbound_address(self) -> str:
        return f"{self.ip}:{INBOUND_PORT}"

    @property
    def admin_address(self) -> str:
        return f"{self.ip}:{ADMIN_PORT}"


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def listeners(pod: SidecarPod, app_port: int, policy: MeshPolicy) -> list[Any]:
    """The outbound listener of each called service and the inbound listener."""
    found = [
        _outbound_listener(pod, service, port, app_port, policy)
        for service, port in OUTBOUND_PORTS.items()
    ]
    found.append(_inbound_listener(pod, app_port, policy))
    return found


def clusters(pod: SidecarPod, app_port: int, policy: MeshPolicy) -> list[Any]:
    """An outbound cluster per called service and the inbound cluster to the app."""
    found = [_outbound_cluster(service, app_port, policy) for service in OUTBOUND_PORTS]
    found.append(_inbound_cluster(pod, app_port))
    return found


def load_assignment(host: str, port: int, endpoints: Sequence[Endpoint]) -> Any:
    """The ready pods of a service, reached at their sidecars' inbound port."""
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address(endpoint.ip, INBOUND_PORT), hostname=endpoint.pod
            )
        )
        for endpoint in sorted(endpoints)
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name(host, port),
        endpoints=(
            [endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)]
            if lb_endpoints
            else []
        ),
    )


def secrets(certificate: WorkloadCertificate) -> list[Any]:
    """The pod's certificate and key (``default``) and the mesh root (``ROOTCA``)."""
    return [
        secret_pb2.Secret(
            name=CERT_SECRET,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=certificate.certificate_pem),
                private_key=base_pb2.DataSource(inline_bytes=certificate.private_key_pem),
            ),
        ),
        secret_pb2.Secret(
            name=ROOT_SECRET,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=certificate.root_pem)
            ),
        ),
    ]


# --- listeners ------------------------------------------------------------------------


def _outbound_listener(
    pod: SidecarPod, service: str, listen_port: int, app_port: int, policy: MeshPolicy
) -> Any:
    host = service_host(service)
    route = _route(cluster_name(host, app_port), _retry_policy(policy))
    manager = _connection_manager(f"outbound_{app_port}_{service}", host, route, [])
    return listener_pb2.Listener(
        name=f"outbound_{service}",
        address=address(pod.ip, listen_port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[listener_components_pb2.FilterChain(filters=[_network_filter(manager)])],
    )


def _inbound_listener(pod: SidecarPod, app_port: int, policy: MeshPolicy) -> Any:
    route = _route(inbound_cluster_name(app_port), None)
    rules = policy.access.get(pod.service)
    filters = [] if rules is None else [_rbac_filter(pod.service, rules, policy)]
    manager = _connection_manager(f"inbound_{app_port}", "inbound", route, filters)
    # Tell the app who called, as Istio does (x-forwarded-client-cert with the URI SAN).
    manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
    manager.set_current_client_cert_details.uri = True
    tls = tls_pb2.DownstreamTlsContext(
        common_tls_context=_tls_context(),
        require_client_certificate=wrappers_pb2.BoolValue(value=policy.mtls_mode == "STRICT"),
    )
    tls.common_tls_context.validation_context_sds_secret_config.CopyFrom(_sds(ROOT_SECRET))
    return listener_pb2.Listener(
        name="virtualInbound",
        address=address(pod.ip, INBOUND_PORT),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=[
            listener_components_pb2.FilterChain(
                transport_socket=_transport_socket(tls), filters=[_network_filter(manager)]
            )
        ],
    )


def _route(cluster: str, retry_policy: Any) -> Any:
    """Every call to ``cluster``, with Istio's defaults: no route timeout (the call's
    grpc-timeout bounds it), and ``retry_policy`` where one is given."""
    action = route_components_pb2.RouteAction(
        cluster=cluster,
        timeout=duration_pb2.Duration(),
        max_stream_duration=route_components_pb2.RouteAction.MaxStreamDuration(
            grpc_timeout_header_max=duration_pb2.Duration()
        ),
    )
    if retry_policy is not None:
        action.retry_policy.CopyFrom(retry_policy)
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"), route=action
    )


def _connection_manager(stat_prefix: str, host: str, route: Any, filters: list[Any]) -> Any:
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.HTTP2,
        route_config=route_pb2.RouteConfiguration(
            name=stat_prefix,
            virtual_hosts=[
                route_components_pb2.VirtualHost(name=host, domains=["*"], routes=[route])
            ],
        ),
        http_filters=[*filters, router_filter()],
    )


def _network_filter(manager: Any) -> Any:
    return listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=pack(manager)
    )


def _rbac_filter(service: str, rules: tuple[AccessRule, ...], policy: MeshPolicy) -> Any:
    """The service's AuthorizationPolicy (action ALLOW): a call that no rule allows is
    answered 403, which Envoy turns into PERMISSION_DENIED for a gRPC caller."""
    policies: dict[str, Any] = {}
    for number, rule in enumerate(rules):
        policies[f"ns[{NAMESPACE}]-policy[{service}]-rule[{number}]"] = rbac_pb2.Policy(
            permissions=[_any_path(rule.paths)],
            principals=[
                rbac_pb2.Principal(
                    or_ids=rbac_pb2.Principal.Set(
                        ids=[
                            rbac_pb2.Principal(
                                authenticated=rbac_pb2.Principal.Authenticated(
                                    principal_name=string_pb2.StringMatcher(exact=spiffe_id(caller))
                                )
                            )
                            for caller in rule.callers
                        ]
                    )
                )
            ],
        )
    policies[f"ns[{NAMESPACE}]-policy[{service}]-rule[{len(rules)}]"] = rbac_pb2.Policy(
        permissions=[_any_path(policy.open_paths)], principals=[rbac_pb2.Principal(any=True)]
    )
    config = rbac_filter_pb2.RBAC(
        rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies=policies)
    )
    return hcm_pb2.HttpFilter(name="envoy.filters.http.rbac", typed_config=pack(config))


def _any_path(paths: Sequence[str]) -> Any:
    matchers = []
    for path in paths:
        if path.endswith("*"):
            matcher = string_pb2.StringMatcher(prefix=path.removesuffix("*"))
        else:
            matcher = string_pb2.StringMatcher(exact=path)
        matchers.append(rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher)))
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=matchers))


def _retry_policy(policy: MeshPolicy) -> Any:
    retry = policy.retry
    return route_components_pb2.RetryPolicy(
        retry_on=",".join(retry.retry_on),
        num_retries=uint32(retry.attempts),
        retriable_status_codes=list(retry.retriable_status_codes),
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=retry.host_selection_attempts,
    )


# --- clusters -------------------------------------------------------------------------


def _outbound_cluster(service: str, port: int, policy: MeshPolicy) -> Any:
    outlier = policy.outlier
    tls = tls_pb2.UpstreamTlsContext(
        common_tls_context=_tls_context(),
        sni=f"outbound_.{port}_._.{service_host(service)}",
    )
    # Mutual TLS that also checks who answers: the callee's service account.
    tls.common_tls_context.combined_validation_context.CopyFrom(
        tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=[
                    common_pb2.SubjectAltNameMatcher(
                        san_type=common_pb2.SubjectAltNameMatcher.URI,
                        matcher=string_pb2.StringMatcher(exact=spiffe_id(service)),
                    )
                ]
            ),
            validation_context_sds_secret_config=_sds(ROOT_SECRET),
        )
    )
    cluster = cluster_pb2.Cluster(
        name=cluster_name(service_host(service), port),
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
        connect_timeout=_CONNECT_TIMEOUT,
        load_balancing_policy=_lb_policy(policy),
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=uint32(outlier.consecutive_errors),
            interval=_seconds(outlier.interval_s),
            base_ejection_time=_seconds(outlier.base_ejection_s),
            max_ejection_percent=uint32(outlier.max_ejection_percent),
            # Istio enforces only the consecutive-errors rule a DestinationRule sets.
            enforcing_consecutive_5xx=uint32(100),
            enforcing_consecutive_gateway_failure=uint32(0),
            enforcing_success_rate=uint32(0),
        ),
        circuit_breakers=_unlimited(),
        transport_socket=_transport_socket(tls),
        track_cluster_stats=cluster_pb2.TrackClusterStats(per_endpoint_stats=True),
    )
    _http2(cluster)
    return cluster


def _inbound_cluster(pod: SidecarPod, app_port: int) -> Any:
    name = inbound_cluster_name(app_port)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_CONNECT_TIMEOUT,
        circuit_breakers=_unlimited(),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=address(pod.ip, app_port)
                            )
                        )
                    ]
                )
            ],
        ),
    )
    _http2(cluster)
    return cluster


def _lb_policy(policy: MeshPolicy) -> Any:
    slow_start = (
        {"slow_start_config": {"slow_start_window": _seconds(policy.warmup_s)}}
        if policy.warmup_s > 0
        else {}
    )
    if policy.load_balancer == "LEAST_REQUEST":
        name, config = "least_request", least_request_pb2.LeastRequest(**slow_start)
    elif policy.load_balancer == "ROUND_ROBIN":
        name, config = "round_robin", round_robin_pb2.RoundRobin(**slow_start)
    else:
        raise ValueError(
            f"load balancer must be LEAST_REQUEST or ROUND_ROBIN: {policy.load_balancer}"
        )
    return cluster_pb2.LoadBalancingPolicy(
        policies=[
            cluster_pb2.LoadBalancingPolicy.Policy(
                typed_extension_config=extension_pb2.TypedExtensionConfig(
                    name=f"envoy.load_balancing_policies.{name}", typed_config=pack(config)
                )
            )
        ]
    )


def _http2(cluster: Any) -> None:
    """gRPC needs HTTP/2 to the upstream: without it Envoy speaks HTTP/1.1."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Pack(options)


def _unlimited() -> Any:
    limit = uint32(_UNLIMITED)
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections=limit, max_pending_requests=limit,
                max_requests=limit, max_retries=limit,
            )
        ]
    )  # fmt: skip


# --- TLS ------------------------------------------------------------------------------


def _tls_context() -> Any:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(CERT_SECRET)], alpn_protocols=["h2"]
    )


def _sds(name: str) -> Any:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_source())


def _transport_socket(context: Any) -> Any:
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


# --- small parts ----------------------------------------------------------------------


def _seconds(value: float) -> Any:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


__all__ = [
    "ADMIN_PORT",
    "ENDPOINTS",
    "INBOUND_PORT",
    "OUTBOUND_PORTS",
    "SECRET",
    "SidecarPod",
    "clusters",
    "listeners",
    "load_assignment",
    "secrets",
]
