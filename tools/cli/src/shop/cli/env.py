"""``shop env``: every environment variable the services read, with defaults."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shop.runtime.config import ALL_SETTINGS


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("env", help="list the environment variables services read")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.json:
        rows = [
            {"name": s.name, "default": s.default, "allowed": s.allowed, "help": s.help}
            for s in ALL_SETTINGS
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for s in ALL_SETTINGS:
        print(f"{s.name}={s.default!s:<16} {s.help} ({s.allowed})")
    return 0
