"""Requests that do not parse are the client's mistake: INVALID_ARGUMENT, no traceback.

gRPC runs a method's request deserializer before any handler code. When it raises
(invalid UTF-8 in a string field, a truncated body, random bytes), grpcio logs the
traceback and answers UNKNOWN, and no interceptor sees the call. So the server
interceptor wraps every deserializer with :func:`tolerant`: a body that does not
parse becomes an :class:`Undecodable` marker, which the wrapped handler turns into
INVALID_ARGUMENT naming the field where parsing failed (found by
:func:`locate_problem`, a walk over the wire format).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from shop.runtime.errors import InvalidArgument

# The field named when the problem is not inside any one field.
WHOLE_REQUEST = "request"


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes did not parse."""

    descriptor: Descriptor | None
    data: bytes

    def error(self) -> InvalidArgument:
        if self.descriptor is None:
            return InvalidArgument.single(WHOLE_REQUEST, "could not be decoded")
        field, problem = locate_problem(self.descriptor, self.data)
        return InvalidArgument.single(field, problem)


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning an :class:`Undecodable` instead of raising."""
    if deserializer is None:
        return None  # the handler takes raw bytes: nothing can fail to parse
    # Generated code passes ``SomeRequest.FromString``; its class knows the fields.
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    known = descriptor if isinstance(descriptor, Descriptor) else None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # whatever the parser raises, the bytes came from the client
            return Undecodable(known, data)

    return deserialize


class _Truncated(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Truncated
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


_FIXED_SIZES = {1: 8, 5: 4}


def locate_problem(descriptor: Descriptor, data: bytes, prefix: str = "") -> tuple[str, str]:
    """(field path, what is wrong) for a message that failed to parse.

    Walks the wire format field by field with the message's descriptor, so that an
    invalid string is reported as ``items[3].sku`` rather than as the request.
    """
    found = _scan(descriptor, data, prefix)
    if found is not None:
        return found
    return prefix.rstrip(".") or WHOLE_REQUEST, f"is not a valid {descriptor.full_name} message"


def _scan(descriptor: Descriptor, data: bytes, prefix: str) -> tuple[str, str] | None:
    here = prefix.rstrip(".") or WHOLE_REQUEST
    counts: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        try:
            key, pos = _varint(data, pos)
        except _Truncated:
            return here, "ends in the middle of a field (truncated or not protobuf)"
        number, wire_type = key >> 3, key & 7
        field = descriptor.fields_by_number.get(number)
        path = here
        if field is not None:
            path = f"{prefix}{field.name}"
            if field.is_repeated and wire_type == 2:
                index = counts.get(number, 0)
                counts[number] = index + 1
                path = f"{path}[{index}]"
        try:
            if wire_type == 0:
                _, pos = _varint(data, pos)
                continue
            if wire_type in _FIXED_SIZES:
                pos += _FIXED_SIZES[wire_type]
                if pos > len(data):
                    raise _Truncated
                continue
            if wire_type != 2:
                return path, "uses a wire type this message does not (not protobuf?)"
            length, pos = _varint(data, pos)
        except _Truncated:
            return path, "is truncated"
        chunk = data[pos : pos + length]
        pos += length
        if len(chunk) < length:
            return path, "is truncated"
        if field is None:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                return path, "is not valid UTF-8"
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            inner = _scan(field.message_type, chunk, f"{path}.")
            if inner is not None:
                return inner
    return None
