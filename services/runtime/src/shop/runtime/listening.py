"""Whether an address can be listened on, asked before any server tries.

grpc's own bind failure prints a core log line and a vague error; probing first
lets the services (and ``shop up``) say in one line what is wrong.
"""

from __future__ import annotations

import errno
import socket


def listen_problem(address: str) -> str | None:
    """Why ``host:port`` cannot be bound now, or None (any resolved address will do)."""
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as exc:
        return f"cannot resolve {host!r}: {exc}"
    problem = "no address to bind"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As grpc does: connections in TIME_WAIT from a previous run do not make
            # the port busy.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                problem = (
                    "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
                )
                continue
        return None
    return problem
