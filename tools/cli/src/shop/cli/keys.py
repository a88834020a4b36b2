"""``shop keys``: see :mod:`shop.cli.token`, which holds both credential commands."""

from __future__ import annotations

from typing import Any

from shop.cli.token import add_keys_parser, run_keys

__all__ = ["add_parser", "run_keys"]


def add_parser(subparsers: Any) -> None:
    add_keys_parser(subparsers)
