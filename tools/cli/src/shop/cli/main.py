"""Entry point of the ``shop`` console command."""

from __future__ import annotations

import argparse
import importlib
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
        try:
            module = importlib.import_module(f"shop.cli.{name}")
        except ModuleNotFoundError as error:
            if name not in FROM_LAB or error.name != f"shop.cli.{name}":
                raise
            _add_missing(subparsers, name)
        else:
            module.add_parser(subparsers)
    return parser


def _add_missing(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str
) -> None:
    """A lab command in an install without the lab (the container image): it is listed,
    and running it says what to install instead of failing on an import."""
    parser = subparsers.add_parser(name, help="(needs grpc-shop-lab: pip install ./tools/lab)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def missing(_: argparse.Namespace) -> int:
        print(
            f"shop {name}: this command comes with the grpc-shop-lab distribution, which is "
            "not installed here (pip install ./tools/lab from a checkout)",
            file=sys.stderr,
        )
        return 2

    parser.set_defaults(run=missing)


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
