"""An ADS control plane: the lab's istiod, for proxyless gRPC clients and Envoy sidecars.

A gRPC channel to ``xds:///inventory.shop.svc.cluster.local:50051`` opens one
Aggregated Discovery Service stream (xDS v3, state of the world) to the server named
in its ``GRPC_XDS_BOOTSTRAP`` file and asks, in turn, for the listener, the cluster and
the cluster's endpoints; the client then balances every call itself. Whenever the
ready endpoints of a service change, :meth:`XdsControlPlane.publish` sends a new
endpoints version down every stream that watches them, so traffic moves to a new
replica within milliseconds, with no proxy hop and no DNS re-resolution.

Resources are built on demand from the names the clients ask for (see
``xds_resources``): any port of a published service has a listener and a cluster,
because a Kubernetes Service port maps to the pods' ports the same way. Wildcard
subscribers get the ports that :meth:`XdsControlPlane.target` handed out or that
endpoints listen on. No RDS: the route is inline in the listener.

An ``xds:///`` channel ignores the service config passed as a channel option (its
resolver supplies one), so the runtime's retry policy and client-side health checks
do not apply there: retries come from the route here, and health from readiness,
through which endpoints are published at all.

Envoy sidecars (the istio mode) use the same server, as a cluster's sidecars and
proxyless clients share istiod. A stream is a sidecar's when its node id is one that
:meth:`XdsControlPlane.add_sidecar` registered; it then gets that pod's listeners,
clusters and SDS secrets (``sidecar_resources``), and endpoint changes reach it by the
same push.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from shop.lab import sidecar_resources as sidecar
from shop.lab import xds_resources as res
from shop.lab.endpoints import Endpoint, service_host
from shop.lab.mesh_ca import MeshCa
from shop.lab.mesh_policy import CHART_MESH, MeshPolicy

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


@dataclass
class _Subscription:
    """What one stream watches of one resource type, and what it was last sent."""

    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    nonce: str = ""
    sent: list[bytes] | None = None


@dataclass(eq=False)
class _Stream:
    peer: str
    node: str = ""
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    # None ends the stream (the client half-closed).
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True)
class _Sidecar:
    pod: sidecar.SidecarPod
    app_port: int


class XdsControlPlane:
    """Serves LDS, CDS and EDS for every published service over ADS (an EndpointPublisher).

    Two data planes, told apart by the node id each stream sends, as istiod does:
    proxyless gRPC clients, whose clusters use ``lb_policy`` (``ROUND_ROBIN``, or
    ``LEAST_REQUEST``, which Envoy and the Java and Go gRPC clients accept but gRPC's C
    core (Python, C++) NACKs), and Envoy sidecars registered with :meth:`add_sidecar`,
    which get their pod's listeners, clusters and certificate (SDS) built from ``mesh``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        lb_policy: str = "ROUND_ROBIN",
        mesh: MeshPolicy = CHART_MESH,
    ) -> None:
        if lb_policy not in res.LB_POLICIES:
            raise ValueError(f"lb_policy must be one of {sorted(res.LB_POLICIES)}: {lb_policy!r}")
        self._host = host
        self._port = port
        self._lb_policy = lb_policy
        self._server: Any = None
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._ports: dict[str, set[int]] = {}  # listed to wildcard subscribers
        self._streams: set[_Stream] = set()
        self._version = 0
        self._nonces = itertools.count(1)
        self._mesh = mesh
        self._sidecars: dict[str, _Sidecar] = {}  # by node id
        self._ca: MeshCa | None = None
        self.pushes = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        handler = grpc.method_handlers_generic_handler(
            ADS_SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._serve_stream,
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
                )
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        self._port = server.add_insecure_port(f"{self._host}:{self._port}")
        await server.start()
        self._server = server
        log.info("xDS control plane on %s (%s)", self.address, self._lb_policy)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the control plane is not started")
        return f"{self._host}:{self._port}"

    def write_bootstrap(self, path: Path, node_id: str = "shop-lab") -> Path:
        """The file ``GRPC_XDS_BOOTSTRAP`` names: where the control plane is, who we are."""
        bootstrap = {
            "xds_servers": [
                {
                    "server_uri": self.address,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {
                "id": node_id,
                "cluster": "shop-lab",
                "locality": {"region": "lab", "zone": "lab-a"},
                "metadata": {"NAMESPACE": "shop", "GENERATOR": "grpc"},
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(bootstrap, indent=2) + "\n")
        return path

    def target(self, service: str, port: int) -> str:
        self._ports.setdefault(service, set()).add(port)
        return f"xds:///{service_host(service)}:{port}"

    def add_sidecar(self, pod: sidecar.SidecarPod, app_port: int) -> None:
        """Registers a pod's Envoy: its stream (by node id) gets that pod's resources."""
        self._sidecars[pod.node_id] = _Sidecar(pod, app_port)

    @property
    def ca(self) -> MeshCa:
        """The mesh's root, made on first use (key generation costs a few ms)."""
        if self._ca is None:
            self._ca = MeshCa()
        return self._ca

    # --- publishing --------------------------------------------------------------------

    async def publish(self, service: str, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints[service] = tuple(sorted(endpoints))
        self._ports.setdefault(service, set()).update(e.port for e in endpoints)
        self._version += 1
        for stream in list(self._streams):
            for type_url in stream.subscriptions:
                self._send(stream, type_url, only_if_changed=True)

    def _resources(self, stream: _Stream, type_url: str, subscription: _Subscription) -> list[Any]:
        node = self._sidecars.get(stream.node)
        if node is not None:
            return self._sidecar_resources(node, type_url, subscription)
        return self._proxyless_resources(type_url, subscription)

    def _sidecar_resources(
        self, node: _Sidecar, type_url: str, subscription: _Subscription
    ) -> list[Any]:
        """A sidecar's resources: its own listeners and clusters (whatever it asks for,
        Envoy subscribes to all of them), endpoints by cluster, secrets by name."""
        if type_url == res.LISTENER:
            return sidecar.listeners(node.pod, node.app_port, self._mesh)
        if type_url == res.CLUSTER:
            return sidecar.clusters(node.pod, node.app_port, self._mesh)
        if type_url == sidecar.SECRET:
            certificate = self.ca.issue(node.pod.service_account)
            return [s for s in sidecar.secrets(certificate) if s.name in subscription.names]
        found = []
        if type_url == res.ENDPOINTS:
            services = {service_host(s): s for s in sidecar.OUTBOUND_PORTS}
            for name in sorted(subscription.names):
                parsed = res.parse_name(type_url, name)
                if parsed is None or parsed[0] not in services:
                    continue
                host, port = parsed
                endpoints = self._endpoints.get(services[host], ())
                found.append(sidecar.load_assignment(host, port, endpoints))
        return found

    def _proxyless_resources(self, type_url: str, subscription: _Subscription) -> list[Any]:
        services = {service_host(s): s for s in self._endpoints}
        names = set(subscription.names)
        if subscription.wildcard:
            names |= {
                res.resource_name(type_url, service_host(s), port)
                for s in self._endpoints
                for port in self._ports.get(s, ())
            }
        found: list[Any] = []
        for name in sorted(names):
            parsed = res.parse_name(type_url, name)
            service = services.get(parsed[0]) if parsed else None
            if parsed is None or service is None:
                continue  # unknown: the client's does-not-exist timer decides
            host, port = parsed
            if type_url == res.LISTENER:
                found.append(res.listener(host, port))
            elif type_url == res.CLUSTER:
                found.append(res.cluster(host, port, self._lb_policy))
            elif type_url == res.ENDPOINTS:
                found.append(res.load_assignment(host, port, self._endpoints[service]))
        return found

    def _send(self, stream: _Stream, type_url: str, *, only_if_changed: bool) -> None:
        subscription = stream.subscriptions[type_url]
        resources = self._resources(stream, type_url, subscription)
        serialized = [r.SerializeToString(deterministic=True) for r in resources]
        if only_if_changed and serialized == subscription.sent:
            return
        packed = []
        for resource in resources:
            message = any_pb2.Any()
            message.Pack(resource)
            packed.append(message)
        subscription.nonce = str(next(self._nonces))
        subscription.sent = serialized
        stream.outbox.put_nowait(
            discovery_pb2.DiscoveryResponse(
                version_info=str(self._version),
                resources=packed,
                type_url=type_url,
                nonce=subscription.nonce,
            )
        )

    # --- the ADS stream ----------------------------------------------------------------

    async def _serve_stream(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        stream = _Stream(peer=context.peer())
        self._streams.add(stream)
        reader = asyncio.get_running_loop().create_task(self._read(stream, requests))
        try:
            while (response := await stream.outbox.get()) is not None:
                self.pushes += 1
                yield response
        finally:
            self._streams.discard(stream)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, stream: _Stream, requests: AsyncIterator[Any]) -> None:
        try:
            async for request in requests:
                self._on_request(stream, request)
        except Exception:
            # A bug building resources must not end the stream unseen: the data plane
            # would only time out waiting for them.
            log.exception("xDS stream from %s (%s) failed", stream.node, stream.peer)
            raise
        finally:
            stream.outbox.put_nowait(None)

    def _on_request(self, stream: _Stream, request: Any) -> None:
        type_url: str = request.type_url
        if request.node.id:
            stream.node = request.node.id
        subscription = stream.subscriptions.get(type_url)
        first = subscription is None
        if subscription is not None:
            if request.response_nonce != subscription.nonce:
                return  # answers a response that a newer one replaced; the next one counts
            if request.HasField("error_detail"):
                log.warning(
                    "xDS NACK from %s (%s) for %s version %s: %s",
                    stream.node,
                    stream.peer,
                    type_url.rpartition(".")[2],
                    request.version_info or "(none accepted)",
                    request.error_detail.message,
                )
            else:
                log.debug("xDS ACK from %s for %s v%s", stream.node, type_url, request.version_info)
        else:
            subscription = stream.subscriptions[type_url] = _Subscription()
        names = set(request.resource_names)
        # An empty first request for listeners or clusters means "all of them", and a
        # legacy wildcard stays one; "*" asks for everything explicitly.
        wildcard = "*" in names or (
            type_url in res.WILDCARD_TYPES and not names and (first or subscription.wildcard)
        )
        names.discard("*")
        if first or names != subscription.names or wildcard != subscription.wildcard:
            subscription.names, subscription.wildcard = names, wildcard
            self._send(stream, type_url, only_if_changed=False)
