"""A cluster DNS for the lab: what CoreDNS does for a headless Service.

In headless mode a gRPC client's target is ``dns:///<svc>.shop.svc.cluster.local:port``:
the client's own resolver (c-ares in gRPC's C core) asks DNS for the pod IPs and
``round_robin`` opens one subchannel per IP. Reproducing that path locally needs a real
DNS server the client can be pointed at, ``dns://127.0.0.1:PORT/<name>:port`` (the
authority form, which only the c-ares resolver honours), whose records follow replica
readiness. This server is that, fed by the same endpoint sets as the proxies and the
xDS control plane (it is an :class:`~shop.lab.endpoints.EndpointPublisher`).

It answers like CoreDNS's ``kubernetes`` plugin for headless Services:

- ``A`` for a published service: one record per ready pod IP, with a short TTL; the
  order rotates on every answer (CoreDNS's ``loadbalance`` plugin shuffles it), so
  ``pick_first`` clients do not all land on the same pod;
- a published service with no ready pod: ``NOERROR`` with no answers (the Service
  exists); a name that was never published: ``NXDOMAIN``; both carry the zone's SOA so
  resolvers may cache the negative answer for the TTL, not longer;
- ``AAAA`` and every other type for a known name: ``NOERROR``, no answers (pods here
  have IPv4 addresses; an IPv6 endpoint would be answered as ``AAAA``);
- names outside ``shop.svc.cluster.local``: ``REFUSED`` (it forwards nothing).

It listens on UDP and on TCP on the same port: an answer too large for the client's
UDP buffer is sent truncated (``TC``), and resolvers such as c-ares then repeat the
query over TCP, as with many-replica Services in a real cluster. It runs on the
caller's asyncio loop and binds loopback addresses only: it is a lab part, not a
server for a network.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Sequence
from typing import cast

from dnslib import AAAA, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSError, DNSLabel, DNSRecord

from shop.lab.endpoints import CLUSTER_DOMAIN, Endpoint, service_host

log = logging.getLogger(__name__)

_CLASS_IN = 1
_OPCODE_QUERY = 0
# RFC 1035's UDP limit, for queries that do not announce a larger buffer with EDNS(0).
_PLAIN_UDP_LIMIT = 512
# What we advertise and accept at most: the DNS flag day 2020 size, below any MTU.
_EDNS_UDP_LIMIT = 1232
_BIND_ATTEMPTS = 20

Name = tuple[bytes, ...]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _name(label: DNSLabel | str) -> Name:
    """A DNS name as lower-case labels (names compare case-insensitively)."""
    return tuple(part.lower() for part in DNSLabel(label).label)


_ZONE = _name(CLUSTER_DOMAIN)


class ClusterDns:
    """An authoritative DNS server for ``shop.svc.cluster.local`` on loopback.

    ``queries`` counts the queries answered; ``query_types`` counts them by type
    (``"A"``, ``"AAAA"``, ...) and ``tcp_queries`` those that came over TCP, so a
    test or a report can show when clients re-resolve and how.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ttl_s: int = 1) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the lab DNS binds loopback addresses only, not {host}")
        if not 0 <= port < 65536:
            raise ValueError(f"port must be 0..65535, got {port}")
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        self._host = host
        self._port = port
        self._ttl_s = ttl_s
        self._records: dict[Name, tuple[IpAddress, ...]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._serial = 1
        self.queries = 0
        self.tcp_queries = 0
        self.query_types: collections.Counter[str] = collections.Counter()
        # A queries per name: each is one client resolving that name.
        self._a_queries: collections.Counter[Name] = collections.Counter()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Binds UDP and TCP on the same port (a free one if the port is 0)."""
        if self._udp is not None:
            raise RuntimeError("ClusterDns already started")
        loop = asyncio.get_running_loop()
        for _ in range(_BIND_ATTEMPTS):
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self._host, self._port)
            )
            port: int = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self._host, port)
            except OSError:
                transport.close()
                if self._port:
                    raise
                continue  # the TCP side of this free UDP port is taken: another one
            self._udp = transport
            self._port = port
            log.info("cluster DNS for %s on %s (udp+tcp)", CLUSTER_DOMAIN, self.authority)
            return
        raise OSError(f"no port free for both UDP and TCP on {self._host}")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None

    async def __aenter__(self) -> ClusterDns:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("ClusterDns not started")
        return self._port

    @property
    def authority(self) -> str:
        """``host:port`` of the server, as a gRPC ``dns://`` authority."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    def resolutions(self, service: str) -> int:
        """``A`` queries answered for ``service``'s name so far: a gRPC client asks once
        per resolution (re-resolving when a connection to the service went away)."""
        return self._a_queries[_name(service_host(service))]

    def target(self, service: str, port: int) -> str:
        """The gRPC target resolving ``service`` through this server."""
        return f"dns://{self.authority}/{service_host(service)}:{port}"

    # --- records -----------------------------------------------------------------------

    async def publish(self, service: str, endpoints: Sequence[Endpoint]) -> None:
        """Replaces the records of ``service``'s name; an empty set keeps the name."""
        addresses: dict[IpAddress, None] = {}  # ordered, one record per IP
        for endpoint in endpoints:
            addresses[ipaddress.ip_address(endpoint.ip)] = None
        self._records[_name(service_host(service))] = tuple(addresses)
        self._serial += 1

    # --- answering ---------------------------------------------------------------------

    def answer(self, packet: bytes, udp: bool) -> bytes | None:
        """The response to one query packet; None for a packet that is not a query."""
        try:
            query = DNSRecord.parse(packet)
        except (DNSError, ValueError, IndexError, UnicodeDecodeError):
            log.debug("dropped a malformed DNS packet (%d bytes)", len(packet))
            return None
        if query.header.qr:
            return None  # a response, not a query
        reply = query.reply(ra=0, aa=1)
        udp_limit = _PLAIN_UDP_LIMIT
        for extra in query.ar:
            if extra.rtype == QTYPE.OPT:
                udp_limit = min(max(extra.rclass, _PLAIN_UDP_LIMIT), _EDNS_UDP_LIMIT)
                reply.add_ar(EDNS0(udp_len=_EDNS_UDP_LIMIT))
        self.queries += 1
        if not udp:
            self.tcp_queries += 1
        if query.header.opcode != _OPCODE_QUERY:
            reply.header.rcode = RCODE.NOTIMP
        elif len(query.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
        else:
            self._resolve(query, reply)
        data: bytes = reply.pack()
        if udp and len(data) > udp_limit:
            # Header and question only, TC set: the client repeats the query over TCP.
            reply.rr, reply.auth = [], []
            reply.header.tc = 1
            data = reply.pack()
        return data

    def _resolve(self, query: DNSRecord, reply: DNSRecord) -> None:
        question = query.q
        qtype = QTYPE.get(question.qtype)
        self.query_types[qtype] += 1
        name = _name(question.qname)
        if question.qclass != _CLASS_IN or name[-len(_ZONE) :] != _ZONE:
            reply.header.rcode = RCODE.REFUSED
            return
        if question.qtype == QTYPE.A:
            self._a_queries[name] += 1
        addresses = self._records.get(name)
        if addresses is None and name != _ZONE:
            reply.header.rcode = RCODE.NXDOMAIN
        wanted = {QTYPE.A: 4, QTYPE.AAAA: 6}.get(question.qtype)
        matching = [ip for ip in addresses or () if ip.version == wanted]
        if matching:
            shift = self.queries % len(matching)
            for ip in matching[shift:] + matching[:shift]:
                rdata = A(str(ip)) if ip.version == 4 else AAAA(str(ip))
                reply.add_answer(RR(question.qname, question.qtype, rdata=rdata, ttl=self._ttl_s))
        else:
            reply.add_auth(self._soa())

    def _soa(self) -> RR:
        """The zone's SOA: its minimum (the negative-caching TTL) is the record TTL."""
        ttl = self._ttl_s
        times = (self._serial, 30, 30, 3600, ttl)
        return RR(
            CLUSTER_DOMAIN,
            QTYPE.SOA,
            rdata=SOA(f"ns.dns.{CLUSTER_DOMAIN}", f"hostmaster.{CLUSTER_DOMAIN}", times),
            ttl=ttl,
        )

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries (RFC 1035 4.2.2); several may share a connection."""
        self._tcp_writers.add(writer)
        try:
            while True:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                response = self.answer(await reader.readexactly(size), udp=False)
                if response is None:
                    break
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDns) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (not an isinstance check: the selector loop's class does not subclass it on 3.11)
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        response = self._server.answer(data, udp=True)
        if response is not None and self._transport is not None:
            self._transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" for an answer whose client already left.
        log.debug("cluster DNS UDP error: %s", exc)
