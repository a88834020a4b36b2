"""Entry point of the ``shop`` console command."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

# name -> module under shop.cli; each module has add_parser(subparsers) and run(args).
# shop.cli is a namespace package: grpc-shop-cli ships the commands a container needs,
# grpc-shop-lab adds the ones that run the shop on this machine (and their dependencies).
SUBCOMMANDS = (
    "up", "load", "demo", "lab", "bench", "env", "serve", "health", "token", "keys",
)  # fmt: skip
FROM_LAB = frozenset({"up", "demo", "lab", "bench"})
FROM_LAB_HINT = "it comes with the grpc-shop-lab distribution (pip install ./tools/lab)"


# gRPC core logs at INFO to stderr otherwise (e.g. about fork() when a command that
# holds channels starts a load-generator process); the commands report errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` one subcommand's: each command module pulls
    in its own dependencies (rich, the database driver, the lab...), and ``shop health`` runs
    every few seconds in a container, where loading them all would triple its cost."""
    parser = argparse.ArgumentParser(
        prog="shop",
        description="grpc-shop: run the shop on loopback, load it, measure balancing.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in (only,) if only else SUBCOMMANDS:
        if not installed(name):
            # Listed in the help, so a reader of the image's `shop --help` learns it exists.
            subparsers.add_parser(name, help=f"(not installed: {FROM_LAB_HINT})")
            continue
        importlib.import_module(f"shop.cli.{name}").add_parser(subparsers)
    return parser


def installed(name: str) -> bool:
    """Whether this install has the command's module (the lab's may be absent)."""
    return name not in FROM_LAB or importlib.util.find_spec(f"shop.cli.{name}") is not None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = words[0] if words and words[0] in SUBCOMMANDS else None
    if command is not None and not installed(command):
        print(f"shop {command}: not installed here: {FROM_LAB_HINT}", file=sys.stderr)
        return 2
    args = build_parser(only=command).parse_args(words)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    raise SystemExit(main())
