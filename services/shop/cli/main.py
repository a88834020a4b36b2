"""Entry point of the ``shop`` console command."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> module under shop.cli; each module has add_parser(subparsers) and run(args).
SUBCOMMANDS = ("up", "load", "demo", "lab", "bench", "env")


# gRPC core logs at INFO to stderr otherwise (e.g. about fork() when a command that
# holds channels starts a load-generator process); the commands report errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shop",
        description="grpc-shop: run the shop on loopback, load it, measure balancing.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"shop.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    raise SystemExit(main())
