"""``shop serve SERVICE``: run one shop service in this process until SIGTERM.

The container image's entry point is ``shop``, so one image runs every service,
chosen by its command (``docker run grpc-shop serve orders``). This does exactly
what ``python -m shop.<service>`` does: the same ``run_service`` with the same
``setup``, configured by the same ``SHOP_*`` and ``OTEL_*`` variables (``shop env``).

Exit codes are those of ``run_service``: 0 after a graceful stop, 1 when the
database never answered (SHOP_DATABASE_WAIT_S), 2 when the configuration is invalid
(one line on stderr names the variable), 2 for an unknown service name (argparse
names the argument).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

# The services this image can run; each is the package shop.<name> with a setup()
# in its app module, the one its __main__ hands to run_service.
SERVICES = ("gateway", "orders", "inventory", "echo")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run one service in this process (what a container runs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("service", choices=SERVICES, metavar="SERVICE", help=", ".join(SERVICES))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the runtime and a service's storage stack are what this command
    # runs, and no other command should pay for loading them.
    from shop.runtime import run_service

    try:
        app = importlib.import_module(f"shop.{args.service}.app")
    except ModuleNotFoundError as error:
        if error.name not in {f"shop.{args.service}", f"shop.{args.service}.app"}:
            raise
        # Each service is a distribution of its own (echo comes with the lab's bench).
        print(f"shop serve: {args.service} is not installed here", file=sys.stderr)
        return 2
    # Returns after a graceful stop; raises SystemExit(2) on a configuration error.
    run_service(args.service, app.setup)
    return 0
