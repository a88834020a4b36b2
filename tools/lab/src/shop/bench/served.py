"""How many calls a runtime server handled, read from its own Prometheus counter.

``shop load`` counts only the calls that completed inside its measured window, but
the servers also handle the warm-up calls and finish the calls still in flight
when the window closes. On a fast hop that is noise; on the chain (hundreds of
calls per second, 64 in flight) it is several percent, so per-call CPU and spans
divide by what the server's ``grpc_server_handled`` counter says it handled.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

HANDLED_FAMILY = "grpc_server_handled"


def handled_calls(metrics_addr: str, grpc_service: str, timeout_s: float = 5.0) -> int:
    """Calls of ``grpc_service`` the server at ``metrics_addr`` completed, any status."""
    url = f"http://{metrics_addr}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != HANDLED_FAMILY:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["grpc_service"] == grpc_service:
                total += sample.value
    return int(total)
