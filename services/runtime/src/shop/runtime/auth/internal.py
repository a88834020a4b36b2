"""Caller tokens: how one shop service proves to another which service it is.

Without a mesh there is no mTLS identity between pods, and a NetworkPolicy says
only which pods may open a connection, not which methods they may call. So every
internal call carries a short-lived JWT (HS256) in the ``shop-caller-token`` header,
issued by the calling service for one callee (``aud``) and signed with the caller's
own key. Keys are files in ``SHOP_INTERNAL_KEYS_DIR``, one per service, named after
it: a service signs with the file of its own name and trusts the files of the
callers its access rules name. A deployment mounts into each pod only the keys it
needs (the chart does), so a compromised gateway cannot sign as orders.

Tokens are minted once per callee and reused until half their lifetime is gone, and
verified tokens are remembered until they expire: a call pays a dict lookup, not an
HMAC and a JSON parse.
"""

from __future__ import annotations

import time
from pathlib import Path

import jwt

from shop.runtime.auth.principals import InternalCaller, Unauthenticated
from shop.runtime.config import ConfigError

CALLER_TOKEN_HEADER = "shop-caller-token"
TOKEN_LIFETIME_S = 300
LEEWAY_S = 30
CACHE_LIMIT = 4096
MIN_KEY_BYTES = 32  # RFC 7518: an HS256 key at least as long as the hash


def read_internal_keys(directory: str) -> dict[str, bytes]:
    """service name -> key, from the files in ``directory`` (hidden files skipped:
    Kubernetes' Secret volumes keep their plumbing in ``..data`` entries)."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"SHOP_INTERNAL_KEYS_DIR={directory!r} is not a directory")
    keys: dict[str, bytes] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        key = entry.read_bytes().strip()
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"SHOP_INTERNAL_KEYS_DIR={directory!r}: key {entry.name!r} is shorter than "
                f"{MIN_KEY_BYTES} bytes"
            )
        keys[entry.name] = key
    return keys


class CallerTokens:
    """Mints this service's caller tokens, one per callee, refreshed before expiry."""

    def __init__(self, service: str, key: bytes) -> None:
        self.service = service
        self._key = key
        self._tokens: dict[str, tuple[str, float]] = {}

    def token(self, audience: str) -> str:
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is not None and cached[1] > now:
            return cached[0]
        token = jwt.encode(
            {"iss": self.service, "aud": audience, "iat": int(now),
             "exp": int(now) + TOKEN_LIFETIME_S},
            self._key,
            algorithm="HS256",
        )  # fmt: skip
        self._tokens[audience] = (token, now + TOKEN_LIFETIME_S / 2)
        return token


class CallerVerifier:
    """Checks caller tokens against the keys of the callers this service trusts."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        self._keys = keys
        self._verified: dict[tuple[str, str], tuple[InternalCaller, float]] = {}

    def trusts(self, service: str) -> bool:
        return service in self._keys

    def verify(self, token: str, audience: str) -> InternalCaller:
        cached = self._verified.get((token, audience))
        now = time.time()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise Unauthenticated("caller token is malformed") from None
        if not isinstance(issuer, str) or issuer not in self._keys:
            raise Unauthenticated("caller token is from a service this one does not know")
        try:
            claims = jwt.decode(
                token,
                self._keys[issuer],
                algorithms=["HS256"],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("caller token has expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("caller token does not verify") from None
        caller = InternalCaller(issuer)
        if len(self._verified) >= CACHE_LIMIT:
            self._verified.clear()
        self._verified[(token, audience)] = (caller, float(claims["exp"]))
        return caller
