"""``shop env``: every environment variable the services read, with defaults."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from shop.runtime.config import SHARED_SETTINGS, Setting

# Services whose own variables (beyond the runtime's) live in shop.<name>.settings.
SERVICES_WITH_SETTINGS = ("gateway", "orders", "inventory")


def every_setting() -> tuple[Setting[Any], ...]:
    """The runtime's shared settings, then each service's own, each variable once (the
    gateway and orders both read where inventory is)."""
    found: dict[str, Setting[Any]] = {s.name: s for s in SHARED_SETTINGS}
    for service in SERVICES_WITH_SETTINGS:
        # Imported here: only this command needs every service's settings module.
        module = importlib.import_module(f"shop.{service}.settings")
        own: tuple[Setting[Any], ...] = module.SETTINGS
        for setting in own:
            found.setdefault(setting.name, setting)
    return tuple(found.values())


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("env", help="list the environment variables services read")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = every_setting()
    if args.json:
        rows = [
            {"name": s.name, "default": s.default, "allowed": s.allowed, "help": s.help}
            for s in settings
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for s in settings:
        print(f"{s.name}={s.default!s:<16} {s.help} ({s.allowed})")
    return 0
