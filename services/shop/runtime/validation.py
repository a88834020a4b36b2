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
from typing import Any

from shop.runtime.errors import FieldViolation, InvalidArgument

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")


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
        elif not IDENTIFIER.match(value):
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


def page_size(value: int, *, default: int, maximum: int) -> int:
    """AIP-158: 0 means the default, larger than the maximum is coerced down."""
    if value < 0:
        raise InvalidArgument.single("page_size", "must not be negative")
    return default if value == 0 else min(value, maximum)


def encode_page_token(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The position stored in ``token``; None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        position = None
    if not isinstance(position, dict) or set(position) != set(keys):
        raise InvalidArgument.single("page_token", "is not a token this service issued")
    return position
