"""How many calls a runtime server handled, read from its own Prometheus counter.

``shop load`` counts only the calls that completed inside its measured window, but
the servers also handle the warm-up calls and finish the calls still in flight
when the window closes. On a fast hop that is noise; on the chain (hundreds of
calls per second, 64 in flight) it is several percent, so per-call CPU and spans
divide by what the server's ``grpc_server_handled`` counter says it handled.
"""

from __future__ import annotations

from shop.lab.attempts import parse_attempts, read_metrics


def handled_calls(metrics_addr: str, grpc_service: str, timeout_s: float = 5.0) -> int:
    """Calls of ``grpc_service`` the server at ``metrics_addr`` completed, any status."""
    return parse_attempts(read_metrics(metrics_addr, timeout_s), grpc_service).answered
