"""Argument types shared by subcommands: errors name the flag and what is allowed."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {raw}")
        return value

    return parse


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {raw}")
    return value


def non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {raw}")
    return value


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that starts a local shop."""
    parser.add_argument("--gateway", type=bounded_int(1, 50), default=1, help="gateway replicas")
    parser.add_argument("--orders", type=bounded_int(1, 50), default=3, help="orders replicas")
    parser.add_argument(
        "--inventory", type=bounded_int(1, 50), default=3, help="inventory replicas"
    )
    parser.add_argument(
        "--base-port",
        type=bounded_int(1024, 65000),
        default=50051,
        help="gRPC port of every replica (metrics on base port + 1000)",
    )
    parser.add_argument(
        "--net",
        type=bounded_int(1, 254),
        default=10,
        help="second octet of the replica IPs: 127.NET.<service>.<replica>",
    )
    parser.add_argument("--data-dir", default="./data", help="SQLite files and replica logs")
    parser.add_argument(
        "--database-url", default="", help="use this database instead of SQLite files"
    )
