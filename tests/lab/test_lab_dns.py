"""The lab's cluster DNS, queried by a DNS client and by gRPC's own resolver.

The gRPC tests run real inventory replicas and a client channel built with the
project's channel options (round_robin, no service config from DNS, a 1 s floor
between resolutions): the headless-Service path end to end. They show both sides
of headless balancing: calls spread over every resolved pod, and a pod added later
gets traffic only when servers age their connections out, because gRPC resolves
again only when a connection ends, never on a timer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.lab.dns import ClusterDns
from shop.lab.endpoints import Endpoint, service_host
from shop.local.cluster import LocalCluster
from shop.runtime.callscope import ROUTE_TRAILER
from shop.runtime.channels import channel_options
from shop.runtime.config import ChannelConfig
from shop.v1 import inventory_pb2, inventory_pb2_grpc

from ..support.auth import caller_metadata

INVENTORY = service_host("inventory")
AGED_SERVER_ENV = {"SHOP_MAX_CONNECTION_AGE_S": "2", "SHOP_MAX_CONNECTION_AGE_GRACE_S": "1"}
ALL_PODS = {f"inventory/inventory-{i}" for i in range(3)}
FIRST_TWO = {"inventory/inventory-0", "inventory/inventory-1"}
CLIENT_CONFIG = dataclasses.replace(
    ChannelConfig.from_env({}), lb_policy="round_robin", dns_min_reresolution_s=1.0
)


@pytest.fixture
async def dns() -> AsyncIterator[ClusterDns]:
    async with ClusterDns(ttl_s=1) as server:
        yield server


@pytest.fixture(scope="module")
def plain_cluster(module_cluster_factory: Callable[..., LocalCluster]) -> LocalCluster:
    """Three inventory replicas with default server settings (no connection age)."""
    return module_cluster_factory(gateway=0, orders=0, inventory=3)


@pytest.fixture(scope="module")
def aged_cluster(module_cluster_factory: Callable[..., LocalCluster]) -> LocalCluster:
    """Three inventory replicas that send GOAWAY once a connection is 2 s old."""
    return module_cluster_factory(
        gateway=0, orders=0, inventory=3, service_env={"inventory": AGED_SERVER_ENV}
    )


def pods(cluster: LocalCluster) -> list[Endpoint]:
    plan = cluster.spec.plan
    return [
        Endpoint(replica.pod, plan.ip("inventory", replica.index), plan.grpc_port)
        for replica in cluster.replicas_of("inventory")
    ]


async def ask(
    dns: ClusterDns, name: str, qtype: str = "A", *, tcp: bool = False, edns: bool = False
) -> DNSRecord:
    """One query with dnslib's blocking client, off the loop the server runs on."""
    query = DNSRecord.question(name, qtype)
    if edns:
        query.add_ar(EDNS0(udp_len=1232))
    packet = await asyncio.to_thread(query.send, "127.0.0.1", dns.port, tcp, 10)
    return DNSRecord.parse(packet)


def addresses(reply: DNSRecord) -> set[str]:
    return {str(rr.rdata) for rr in reply.rr}


class InventoryClient:
    """ListProducts calls through a ``dns://`` target, counted per serving pod, made
    as the gateway makes them (with its caller token)."""

    def __init__(self, dns: ClusterDns, cluster: LocalCluster) -> None:
        target = dns.target("inventory", cluster.spec.plan.grpc_port)
        self.channel = grpc.aio.insecure_channel(
            target, options=channel_options(CLIENT_CONFIG, target, INVENTORY_SERVICE)
        )
        self.stub = inventory_pb2_grpc.InventoryStub(self.channel)
        self.metadata = caller_metadata(cluster.credentials, "gateway", INVENTORY_SERVICE)

    async def calls(self, count: int) -> Counter[str]:
        served: Counter[str] = Counter()
        for _ in range(count):
            call = self.stub.ListProducts(
                inventory_pb2.ListProductsRequest(page_size=1), metadata=self.metadata, timeout=10
            )
            await call
            served[dict(await call.trailing_metadata())[ROUTE_TRAILER]] += 1
        return served

    async def calls_until(self, wanted: set[str], timeout_s: float) -> Counter[str]:
        """Calls until each pod in ``wanted`` has served one: round_robin uses a pod
        only once its connection is READY, which takes a while on a busy machine."""
        deadline = time.monotonic() + timeout_s
        served: Counter[str] = Counter()
        while not wanted <= set(served):
            assert time.monotonic() < deadline, f"no calls to {wanted - set(served)}: {served}"
            served += await self.calls(5)
            await asyncio.sleep(0.02)  # pace the calls, the machine is shared
        return served

    async def close(self) -> None:
        await self.channel.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[ClusterDns, LocalCluster], InventoryClient]]:
    opened: list[InventoryClient] = []

    def open_client(dns: ClusterDns, cluster: LocalCluster) -> InventoryClient:
        client = InventoryClient(dns, cluster)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


# --- answers, seen by a DNS client -----------------------------------------------------


async def test_answers_follow_publish(dns: ClusterDns) -> None:
    first = [Endpoint(f"inventory-{i}", f"127.9.3.{i + 1}", 50051) for i in range(3)]
    await dns.publish("inventory", first)
    reply = await ask(dns, INVENTORY)
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.aa == 1
    assert addresses(reply) == {"127.9.3.1", "127.9.3.2", "127.9.3.3"}
    assert {rr.ttl for rr in reply.rr} == {1}
    # Names compare case-insensitively; the answer echoes the name as asked.
    reply = await ask(dns, INVENTORY.upper())
    assert addresses(reply) == {"127.9.3.1", "127.9.3.2", "127.9.3.3"}
    assert {str(rr.rname) for rr in reply.rr} == {INVENTORY.upper() + "."}

    await dns.publish("inventory", [first[2], Endpoint("inventory-3", "127.9.3.4", 50051)])
    assert addresses(await ask(dns, INVENTORY)) == {"127.9.3.3", "127.9.3.4"}

    # A Service with no ready pod exists: NOERROR, no answers, the SOA for caching.
    await dns.publish("inventory", [])
    reply = await ask(dns, INVENTORY)
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.rr == []
    assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA]

    # A name nobody published does not exist.
    reply = await ask(dns, service_host("payments"))
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA]

    assert dns.queries == 5
    assert dns.query_types == Counter({"A": 5})
    # Resolutions per service name, whatever the case it was asked in.
    assert dns.resolutions("inventory") == 4 and dns.resolutions("payments") == 1


async def test_other_types_and_other_domains(dns: ClusterDns) -> None:
    await dns.publish("orders", [Endpoint("orders-0", "127.9.2.1", 50051)])
    for qtype in ("AAAA", "TXT", "SRV"):
        reply = await ask(dns, service_host("orders"), qtype)
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, []), qtype
    reply = await ask(dns, "example.com")
    assert (reply.header.rcode, reply.rr) == (RCODE.REFUSED, [])
    assert dns.query_types == Counter({"AAAA": 1, "TXT": 1, "SRV": 1, "A": 1})
    # Only A queries count as a resolution (c-ares asks AAAA beside each A).
    assert dns.resolutions("orders") == 0


async def test_large_answers_are_truncated_over_udp_and_complete_over_tcp(
    dns: ClusterDns,
) -> None:
    # 40 A records (about 700 bytes) exceed plain DNS's 512-byte UDP limit.
    many = [Endpoint(f"inventory-{i}", f"127.9.3.{i + 1}", 50051) for i in range(40)]
    await dns.publish("inventory", many)
    truncated = await ask(dns, INVENTORY)
    assert (truncated.header.tc, truncated.rr) == (1, [])
    complete = await ask(dns, INVENTORY, tcp=True)
    assert complete.header.tc == 0
    assert addresses(complete) == {e.ip for e in many}
    # A client announcing a 1232-byte buffer with EDNS(0) gets it all over UDP.
    assert addresses(await ask(dns, INVENTORY, edns=True)) == {e.ip for e in many}
    assert dns.tcp_queries == 1


async def test_listens_on_one_port_for_udp_and_tcp() -> None:
    async with ClusterDns() as first:
        assert first.authority == f"127.0.0.1:{first.port}"
        assert first.target("orders", 50051) == (
            f"dns://127.0.0.1:{first.port}/orders.shop.svc.cluster.local:50051"
        )
        await first.publish("orders", [Endpoint("orders-0", "127.9.2.1", 50051)])
        for tcp in (False, True):
            reply = await ask(first, service_host("orders"), tcp=tcp)
            assert addresses(reply) == {"127.9.2.1"}
        assert first.tcp_queries == 1
        with pytest.raises(OSError):
            await ClusterDns(port=first.port).start()  # taken
    with pytest.raises(ValueError, match="loopback"):
        ClusterDns(host="0.0.0.0")


# --- gRPC's resolver ---------------------------------------------------------------------


async def test_grpc_round_robin_over_every_resolved_pod(
    dns: ClusterDns,
    plain_cluster: LocalCluster,
    clients: Callable[[ClusterDns, LocalCluster], InventoryClient],
) -> None:
    await dns.publish("inventory", pods(plain_cluster))
    client = clients(dns, plain_cluster)
    await client.calls_until(ALL_PODS, timeout_s=30)
    served = await client.calls(90)
    assert set(served) == ALL_PODS
    assert min(served.values()) >= 25, served  # 30 each
    # The channel asked this server (A, and AAAA as c-ares asks both).
    assert dns.query_types["A"] >= 1


async def test_grpc_falls_back_to_tcp_for_large_answers(
    dns: ClusterDns,
    plain_cluster: LocalCluster,
    clients: Callable[[ClusterDns, LocalCluster], InventoryClient],
) -> None:
    # The 3 pods plus 37 addresses nothing listens on: 40 records, too many for UDP.
    plan = plain_cluster.spec.plan
    absent = [
        Endpoint(f"gone-{i}", f"127.{plan.net}.3.{100 + i}", plan.grpc_port) for i in range(37)
    ]
    await dns.publish("inventory", pods(plain_cluster) + absent)
    served = await clients(dns, plain_cluster).calls_until(ALL_PODS, timeout_s=30)
    assert set(served) == ALL_PODS
    assert dns.tcp_queries >= 1


async def test_scale_up_reaches_new_pod_when_servers_age_connections(
    dns: ClusterDns,
    aged_cluster: LocalCluster,
    clients: Callable[[ClusterDns, LocalCluster], InventoryClient],
) -> None:
    endpoints = pods(aged_cluster)
    await dns.publish("inventory", endpoints[:2])
    client = clients(dns, aged_cluster)
    served = await client.calls_until(FIRST_TWO, timeout_s=30)
    assert set(served) == FIRST_TWO

    await dns.publish("inventory", endpoints)
    # GOAWAY after 2 s (+1 s grace) -> reconnect -> re-resolution (>= 1 s apart).
    await client.calls_until({"inventory/inventory-2"}, timeout_s=30)
    assert dns.query_types["A"] >= 2  # the first resolution and at least one more


async def test_scale_up_misses_new_pod_without_connection_age(
    dns: ClusterDns,
    plain_cluster: LocalCluster,
    clients: Callable[[ClusterDns, LocalCluster], InventoryClient],
) -> None:
    endpoints = pods(plain_cluster)
    await dns.publish("inventory", endpoints[:2])
    client = clients(dns, plain_cluster)
    served = await client.calls_until(FIRST_TWO, timeout_s=30)
    assert set(served) == FIRST_TWO
    queries_before = dns.queries

    await dns.publish("inventory", endpoints)
    # 8 s: where servers age connections, the same channel reaches the new pod in 2-3 s.
    deadline = time.monotonic() + 8
    after: Counter[str] = Counter()
    while time.monotonic() < deadline:
        after += await client.calls(10)
        await asyncio.sleep(0.05)  # pace the calls, the machine is shared
    assert set(after) == FIRST_TWO
    # Healthy connections never end, so the channel never asked DNS again, though
    # the TTL is 1 s and it may re-resolve every second.
    assert dns.queries == queries_before
