"""Small request-validation helpers that collect every violation, then raise once.

A client fixing a bad request should learn about all of its bad fields in one
round trip, each named by its path (``items[2].quantity``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from shop.runtime.errors import FieldViolation, InvalidArgument

# Always used with fullmatch: ``$`` alone also matches before a trailing newline.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")
# Echoed client values are cut to this many characters: an error message repeats
# what was wrong, not the whole of what was sent.
ECHO_MAX_CHARS = 32
# What a page token position may hold: short printable strings, 64-bit integers.
_TOKEN_STR_MAX_CHARS = 256
_INT64 = range(-(2**63), 2**63)


def is_identifier(value: str) -> bool:
    """True if the whole of ``value`` is an identifier (no trailing newline either)."""
    return IDENTIFIER.fullmatch(value) is not None


class Violations:
    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def identifier(self, field: str, value: str, *, max_len: int, required: bool = True) -> None:
        if not value:
            if required:
                self.add(field, "is required")
            return
        if len(value) > max_len:
            self.add(field, f"must be at most {max_len} characters")
        elif not is_identifier(value):
            self.add(field, "may contain only letters, digits and _ . : - (no leading symbol)")

    def int_range(self, field: str, value: int, low: int, high: int) -> None:
        if not low <= value <= high:
            self.add(field, f"must be between {low} and {high}, got {value}")

    def uuid(self, field: str, value: str) -> None:
        if not value:
            self.add(field, "is required")
            return
        try:
            uuid.UUID(value)
        except ValueError:
            self.add(field, "must be a UUID")

    def raise_if_any(self) -> None:
        if self._items:
            raise InvalidArgument(self._items)


def echo(value: str, limit: int = ECHO_MAX_CHARS) -> str:
    """``value`` quoted for an error message, shortened past ``limit`` characters."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}..."


def page_size(value: int, *, default: int, maximum: int) -> int:
    """AIP-158: 0 means the default, larger than the maximum is coerced down."""
    if value < 0:
        raise InvalidArgument.single("page_size", "must not be negative")
    return default if value == 0 else min(value, maximum)


def encode_page_token(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(
    token: str, keys: tuple[str, ...], *, types: Mapping[str, type] | None = None
) -> dict[str, Any] | None:
    """The position stored in ``token``; None for the first page.

    Every key's value must have the type this service puts there (``str`` unless
    ``types`` says ``int``): the position goes into a query as bound parameters, and
    a dict, a list or a 100-digit number in their place is a forged token, not a
    database error.
    """
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        position = None
    if (
        not isinstance(position, dict)
        or set(position) != set(keys)
        or not all(_position_value_ok(position[k], (types or {}).get(k, str)) for k in keys)
    ):
        raise InvalidArgument.single("page_token", "is not a token this service issued")
    return position


def _position_value_ok(value: object, expected: type) -> bool:
    if expected is str:
        # isprintable() also refuses NUL (PostgreSQL rejects it in text) and the lone
        # surrogates JSON can encode (they cannot be sent as UTF-8).
        return isinstance(value, str) and len(value) <= _TOKEN_STR_MAX_CHARS and value.isprintable()
    if expected is int:
        return type(value) is int and value in _INT64
    return False
