"""``python -m shop.echo [--bare]``: run one Echo server.

Without ``--bare`` it is a shop service like the others, configured by the same
``SHOP_*`` and ``OTEL_*`` variables (``shop env``). With ``--bare`` it reads only
``SHOP_LISTEN_ADDR``, ``SHOP_UVLOOP`` and ``SHOP_SHUTDOWN_GRACE_S`` and serves Echo
(plus gRPC health, for readiness) on a plain ``grpc.aio`` server. A flag rather
than an environment variable: the mode belongs to the benchmark, not to a
deployment, so it stays out of the service settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from shop.echo.app import setup
from shop.echo.bare import run_bare
from shop.runtime import run_service
from shop.runtime.config import LISTEN_ADDR, SHUTDOWN_GRACE_S, UVLOOP, ConfigError
from shop.runtime.server import EXIT_CONFIG_ERROR


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shop.echo", description=__doc__)
    parser.add_argument(
        "--bare",
        action="store_true",
        help="plain grpc.aio server: no interceptors, metrics, tracing or reflection",
    )
    args = parser.parse_args(argv)
    if not args.bare:
        run_service("echo", setup)
        return
    try:
        listen_addr = LISTEN_ADDR.read(os.environ)
        use_uvloop = UVLOOP.read(os.environ)
        grace_s = SHUTDOWN_GRACE_S.read(os.environ)
        run_bare(listen_addr, use_uvloop, grace_s)
    except ConfigError as error:
        print(f"echo: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


if __name__ == "__main__":
    main()
