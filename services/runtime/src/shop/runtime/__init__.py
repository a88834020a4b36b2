"""The runtime kit every shop service is built on: written once, used by all three.

Where things live: configuration in ``config``, server start in ``server``, the
whole stop sequence (signals, drain, grace, release) in ``shutdown``, client
channels in ``channels``, per-call telemetry in ``interceptors`` (metrics from
``metrics``, spans from ``tracing``), JSON logs in ``logs``, statuses for domain
errors in ``errors``, storage engines in ``database``.
"""

from shop.runtime.server import Runtime, run_service

__all__ = ["Runtime", "run_service"]
