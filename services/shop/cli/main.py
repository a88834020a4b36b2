"""Entry point of the ``shop`` console command."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> module under shop.cli; each module has add_parser(subparsers) and run(args).
SUBCOMMANDS = (
    "up", "load", "demo", "lab", "bench", "env", "serve", "health", "token", "keys",
)  # fmt: skip


# gRPC core logs at INFO to stderr otherwise (e.g. about fork() when a command that
# holds channels starts a load-generator process); the commands report errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` one subcommand's: each command module pulls
    in its own dependencies (rich, SQLAlchemy, the lab...), and ``shop health`` runs
    every few seconds in a container, where loading them all would triple its cost."""
    parser = argparse.ArgumentParser(
        prog="shop",
        description="grpc-shop: run the shop on loopback, load it, measure balancing.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in (only,) if only else SUBCOMMANDS:
        module = importlib.import_module(f"shop.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=words[0] if words and words[0] in SUBCOMMANDS else None)
    args = parser.parse_args(words)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    raise SystemExit(main())
