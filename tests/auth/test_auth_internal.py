"""Caller tokens between shop services, and the access rules that use them."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from shop.credentials import LocalCredentials, ensure_credentials
from shop.runtime.auth import ADMIN, END_USER, OPEN, AccessPolicy, callers
from shop.runtime.auth.internal import (
    CALLER_TOKEN_HEADER,
    CallerTokens,
    CallerVerifier,
    read_internal_keys,
)
from shop.runtime.auth.principals import InternalCaller, PermissionDenied, Unauthenticated
from shop.runtime.config import AuthConfig, ConfigError

INVENTORY = "shop.v1.Inventory"


def keys(credentials: LocalCredentials) -> dict[str, bytes]:
    return read_internal_keys(str(credentials.internal_keys_dir))


def test_a_caller_token_names_its_service_for_its_audience_only(
    credentials: LocalCredentials,
) -> None:
    all_keys = keys(credentials)
    token = CallerTokens("orders", all_keys["orders"]).token(INVENTORY)
    verifier = CallerVerifier({"orders": all_keys["orders"]})
    assert verifier.verify(token, INVENTORY) == InternalCaller("orders")
    with pytest.raises(Unauthenticated, match="does not verify"):
        verifier.verify(token, "shop.v1.Orders")  # minted for inventory, replayed to orders


def test_tokens_of_unknown_or_forged_or_expired_callers_are_refused(
    credentials: LocalCredentials,
) -> None:
    all_keys = keys(credentials)
    verifier = CallerVerifier({"orders": all_keys["orders"]})
    gateway = CallerTokens("gateway", all_keys["gateway"]).token(INVENTORY)
    with pytest.raises(Unauthenticated, match="does not know"):
        verifier.verify(gateway, INVENTORY)
    forged = CallerTokens("orders", b"x" * 32).token(INVENTORY)
    with pytest.raises(Unauthenticated, match="does not verify"):
        verifier.verify(forged, INVENTORY)
    expired = jwt.encode(
        {"iss": "orders", "aud": INVENTORY, "exp": int(time.time()) - 600},
        all_keys["orders"],
        algorithm="HS256",
    )
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(expired, INVENTORY)
    with pytest.raises(Unauthenticated, match="malformed"):
        verifier.verify("not-a-token", INVENTORY)


def test_a_minted_token_is_reused_until_half_its_lifetime(credentials: LocalCredentials) -> None:
    tokens = CallerTokens("gateway", keys(credentials)["gateway"])
    assert tokens.token(INVENTORY) == tokens.token(INVENTORY)
    assert tokens.token(INVENTORY) != tokens.token("shop.v1.Orders")


def test_the_keys_directory_skips_secret_volume_plumbing_and_refuses_short_keys(
    tmp_path: Path,
) -> None:
    (tmp_path / "..data").mkdir()  # what a Kubernetes Secret volume holds besides the keys
    (tmp_path / ".hidden").write_text("x" * 40)
    (tmp_path / "gateway").write_text("k" * 40 + "\n")
    assert read_internal_keys(str(tmp_path)) == {"gateway": b"k" * 40}
    (tmp_path / "orders").write_text("short")
    with pytest.raises(ConfigError, match=r"SHOP_INTERNAL_KEYS_DIR=.*'orders' is shorter"):
        read_internal_keys(str(tmp_path))
    with pytest.raises(ConfigError, match="not a directory"):
        read_internal_keys(str(tmp_path / "missing"))


def config(credentials: LocalCredentials | None, jwks: bool = True) -> AuthConfig:
    return AuthConfig(
        jwks=str(credentials.jwks) if credentials and jwks else "",
        issuer="grpc-shop",
        audience="grpc-shop",
        internal_keys_dir=str(credentials.internal_keys_dir) if credentials else "",
    )


async def test_rules_that_cannot_be_enforced_stop_the_start_naming_the_variable(
    credentials: LocalCredentials, tmp_path: Path
) -> None:
    policy = AccessPolicy("gateway", config(credentials, jwks=False))
    policy.protect("shop.v1.Gateway", {"PlaceOrder": END_USER})
    with pytest.raises(ConfigError, match="SHOP_AUTH_JWKS is required"):
        await policy.load()
    policy = AccessPolicy("orders", config(None))
    policy.protect("shop.v1.Orders", {"GetOrder": callers("gateway")})
    with pytest.raises(ConfigError, match="SHOP_INTERNAL_KEYS_DIR is required"):
        await policy.load()
    only_gateway = ensure_credentials(tmp_path / "partial", services=("gateway",))
    policy = AccessPolicy("inventory", config(only_gateway))
    policy.protect(INVENTORY, {"Reserve": callers("orders")})
    with pytest.raises(ConfigError, match="no key for orders"):
        await policy.load()
    with pytest.raises(ConfigError, match="no key named 'inventory'"):
        policy.caller_tokens()


async def test_the_checker_admits_exactly_what_the_rules_say(
    credentials: LocalCredentials,
) -> None:
    policy = AccessPolicy("inventory", config(credentials))
    policy.protect(
        INVENTORY,
        {"Release": callers("orders"), "SetStock": ADMIN, "ListProducts": OPEN},
    )
    await policy.load()
    assert policy.checker("/grpc.health.v1.Health/Check") is None
    assert policy.checker("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") is None
    assert policy.checker(f"/{INVENTORY}/ListProducts") is None
    with pytest.raises(PermissionDenied, match="no access rule"):
        await policy.checker(f"/{INVENTORY}/NewMethod")({})  # type: ignore[misc]
    release = policy.checker(f"/{INVENTORY}/Release")
    assert release is not None
    all_keys = keys(credentials)

    def caller(name: str) -> dict[str, str]:
        return {CALLER_TOKEN_HEADER: CallerTokens(name, all_keys[name]).token(INVENTORY)}

    assert await release(caller("orders")) == InternalCaller("orders")
    # Only orders' key is trusted for Release, so the gateway's token does not verify.
    with pytest.raises(Unauthenticated, match="does not know"):
        await release(caller("gateway"))
    with pytest.raises(Unauthenticated, match="internal"):
        await release({})
    set_stock = policy.checker(f"/{INVENTORY}/SetStock")
    assert set_stock is not None
    issuer = credentials.issuer()
    with pytest.raises(PermissionDenied, match=r"shop\.admin"):
        await set_stock({"authorization": f"Bearer {issuer.token('cust-1')}"})
    admin = await set_stock({"authorization": f"Bearer {issuer.token('ops', admin=True)}"})
    assert admin is not None


async def test_a_caller_the_service_knows_but_this_method_does_not_admit_is_denied(
    credentials: LocalCredentials,
) -> None:
    policy = AccessPolicy("inventory", config(credentials))
    policy.protect(INVENTORY, {"Reserve": callers("orders"), "ListProducts": callers("gateway")})
    await policy.load()
    reserve = policy.checker(f"/{INVENTORY}/Reserve")
    assert reserve is not None
    token = CallerTokens("gateway", keys(credentials)["gateway"]).token(INVENTORY)
    denied = r"gateway may not call /shop\.v1\.Inventory/Reserve"
    with pytest.raises(PermissionDenied, match=denied):
        await reserve({CALLER_TOKEN_HEADER: token})
