"""Request-validation helpers: every violation reported, page tokens opaque but checked."""

from __future__ import annotations

import base64
import json

import pytest

from shop.runtime.errors import InvalidArgument
from shop.runtime.validation import (
    Violations,
    decode_page_token,
    encode_page_token,
    page_size,
)


@pytest.mark.parametrize(
    "position",
    [
        {"sku": "ESP-001"},
        {"c": "2026-01-01T00:00:00.000001+00:00", "o": "0d9c7f0e-2c1b-4a51-9b53-1f2f7d3e0a11"},
        {"sku": "ünïcödé/+=?&"},
        {"n": 12345},
    ],
)
def test_page_token_round_trip(position: dict[str, object]) -> None:
    token = encode_page_token(position)
    # URL-safe and unpadded, so it can travel in query strings untouched.
    assert "=" not in token and "+" not in token and "/" not in token
    # Values are strings unless the caller says otherwise (a position's types are
    # checked since it ends up as bound query parameters).
    types = {key: type(value) for key, value in position.items()}
    assert decode_page_token(token, tuple(position), types=types) == position


def test_empty_token_is_the_first_page() -> None:
    assert decode_page_token("", ("sku",)) is None


def _raw_token(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!not-base64!!!",
        "a",
        _raw_token(b"\xff\xfe\x00"),
        _raw_token(b"[1, 2, 3]"),
        _raw_token(b'"sku"'),
        _raw_token(json.dumps({"other": "x"}).encode()),
        _raw_token(json.dumps({"sku": "A", "extra": 1}).encode()),
    ],
)
def test_garbage_token_is_invalid_argument_naming_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, ("sku",))
    assert [v.field for v in caught.value.violations] == ["page_token"]
    assert caught.value.code.name == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "value",
    [{"$gt": ""}, ["a", "b"], 10**30, 7, None, True, "a\x00b", "\ud800", "x" * 257, "\n"],
    ids=["dict", "list", "huge-int", "int", "null", "bool", "nul", "surrogate", "long", "control"],
)
def test_token_with_the_right_keys_but_a_forged_value_is_rejected(value: object) -> None:
    token = _raw_token(json.dumps({"sku": value}).encode())
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, ("sku",))
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_integer_positions_are_bounded_to_64_bits() -> None:
    types = {"n": int}
    assert decode_page_token(encode_page_token({"n": -(2**63)}), ("n",), types=types)
    for value in (2**63, "12", 1.5, True):
        with pytest.raises(InvalidArgument, match="page_token"):
            decode_page_token(_raw_token(json.dumps({"n": value}).encode()), ("n",), types=types)


def test_token_of_another_listing_is_rejected() -> None:
    orders_token = encode_page_token({"c": "t", "o": "id"})
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_page_token(orders_token, ("sku",))


def test_page_size() -> None:
    assert page_size(0, default=20, maximum=100) == 20
    assert page_size(7, default=20, maximum=100) == 7
    assert page_size(1000, default=20, maximum=100) == 100
    with pytest.raises(InvalidArgument) as caught:
        page_size(-1, default=20, maximum=100)
    assert caught.value.violations[0].field == "page_size"


def test_violations_are_collected_then_raised_once() -> None:
    violations = Violations()
    violations.identifier("customer_id", "", max_len=64)
    violations.identifier("idempotency_key", "", max_len=64, required=False)
    violations.identifier("sku", "-leading", max_len=64)
    violations.identifier("name", "x" * 65, max_len=64)
    violations.int_range("items[0].quantity", 0, 1, 1000)
    violations.uuid("order_id", "not-a-uuid")
    violations.uuid("other_id", "")
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    fields = [v.field for v in caught.value.violations]
    assert fields == ["customer_id", "sku", "name", "items[0].quantity", "order_id", "other_id"]
    assert "items[0].quantity: must be between 1 and 1000, got 0" in str(caught.value)


@pytest.mark.parametrize("value", ["abc\n", "abc\r\n", "\nabc", "a b"])
def test_identifier_must_match_whole(value: str) -> None:
    violations = Violations()
    violations.identifier("customer_id", value, max_len=64)
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [v.field for v in caught.value.violations] == ["customer_id"]


def test_echoed_values_are_shortened() -> None:
    from shop.runtime.validation import echo

    assert echo("ESP-001") == "'ESP-001'"
    long_value = "x" * 10_000
    assert echo(long_value) == repr("x" * 32) + "..."


def test_no_violations_raise_nothing() -> None:
    violations = Violations()
    violations.identifier("customer_id", "c-1.a:b_c", max_len=64)
    violations.int_range("quantity", 5, 1, 1000)
    violations.uuid("order_id", "0d9c7f0e-2c1b-4a51-9b53-1f2f7d3e0a11")
    violations.raise_if_any()
