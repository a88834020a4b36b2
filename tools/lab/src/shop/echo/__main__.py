"""``python -m shop.echo [--bare [--forward HOST:PORT]]``: run one Echo server.

Without ``--bare`` it is a shop service like the others, configured by the same
``SHOP_*`` and ``OTEL_*`` variables (``shop env``). With ``--bare`` it reads only
``SHOP_LISTEN_ADDR``, ``SHOP_UVLOOP`` and ``SHOP_SHUTDOWN_GRACE_S`` and serves Echo
(plus gRPC health, for readiness) on a plain ``grpc.aio`` server; ``--forward``
makes that server a hop of a bare chain, answering each call with the Echo of the
server at HOST:PORT. Flags rather than environment variables: the mode belongs to
the benchmark, not to a deployment, so it stays out of the service settings.
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


def host_port(raw: str) -> str:
    """``host:port`` (a name, an IPv4 address or a bracketed IPv6 one; port 1-65535)."""
    try:
        # The same check as SHOP_LISTEN_ADDR's: one idea of what an address is.
        return LISTEN_ADDR.parse(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port from 1 to 65535, got {raw!r}"
        ) from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shop.echo", description=__doc__)
    parser.add_argument(
        "--bare",
        action="store_true",
        help="plain grpc.aio server: no interceptors, metrics, tracing or reflection",
    )
    parser.add_argument(
        "--forward",
        type=host_port,
        metavar="HOST:PORT",
        help="with --bare: answer each Echo with the Echo of the server at HOST:PORT "
        "(one plain insecure channel; the caller's deadline, else 10 s)",
    )
    args = parser.parse_args(argv)
    if args.forward is not None and not args.bare:
        parser.error("argument --forward: needs --bare (the runtime's Echo does not forward)")
    if not args.bare:
        run_service("echo", setup)
        return
    try:
        listen_addr = LISTEN_ADDR.read(os.environ)
        use_uvloop = UVLOOP.read(os.environ)
        grace_s = SHUTDOWN_GRACE_S.read(os.environ)
        run_bare(listen_addr, use_uvloop, grace_s, args.forward)
    except ConfigError as error:
        print(f"echo: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


if __name__ == "__main__":
    main()
