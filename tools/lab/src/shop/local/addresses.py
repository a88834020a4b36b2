"""The address plan of a local shop, and a check that an address is free."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from shop.runtime.listening import listen_problem

SERVICE_OCTET = {"gateway": 1, "orders": 2, "inventory": 3, "echo": 4}


@dataclass(frozen=True)
class AddressPlan:
    """``127.<net>.<service>.<replica + 1>``; the gRPC port and metrics port are shared."""

    net: int = 10
    grpc_port: int = 50051
    metrics_port: int = 9464

    def __post_init__(self) -> None:
        if not 0 < self.net < 255:
            raise ValueError(f"net must be 1..254, got {self.net}")
        for port in (self.grpc_port, self.metrics_port):
            if not 0 < port < 65536:
                raise ValueError(f"port must be 1..65535, got {port}")
        if self.grpc_port == self.metrics_port:
            raise ValueError("gRPC and metrics ports must differ")

    def ip(self, service: str, replica: int) -> str:
        if not 0 <= replica < 254:
            raise ValueError(f"replica index must be 0..253, got {replica}")
        return f"127.{self.net}.{SERVICE_OCTET[service]}.{replica + 1}"

    def grpc_addr(self, service: str, replica: int) -> str:
        return f"{self.ip(service, replica)}:{self.grpc_port}"

    def metrics_addr(self, service: str, replica: int) -> str:
        return f"{self.ip(service, replica)}:{self.metrics_port}"

    def static_target(self, service: str, replicas: int) -> str:
        """A gRPC ``ipv4:`` target listing every replica: client-side balancing
        without DNS."""
        return "ipv4:" + ",".join(self.grpc_addr(service, i) for i in range(replicas))


def address_in_use(address: str) -> str | None:
    """None if ``host:port`` can be bound now, else a sentence saying why not."""
    problem = listen_problem(address)
    if problem is None:
        return None
    if problem == "already in use":
        return f"{address} is already in use"
    return f"{address} cannot be bound ({problem})"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def free_net(grpc_port: int = 50051, first: int = 100, last: int = 250) -> int:
    """A ``net`` octet whose gateway address is free (used by tests and benchmarks)."""
    import random

    candidates = list(range(first, last))
    random.shuffle(candidates)
    for net in candidates:
        plan = AddressPlan(net=net, grpc_port=grpc_port)
        if all(
            address_in_use(addr) is None
            for addr in (plan.grpc_addr("gateway", 0), plan.grpc_addr("orders", 0),
                         plan.grpc_addr("inventory", 0))
        ):  # fmt: skip
            return net
    raise RuntimeError("no free loopback net found")
