"""End users' and administrators' bearer tokens (JWT), verified at the edge.

Verification checks the signature against the deployment's keys, the issuer, the
audience and the expiry. A verified token is remembered until it expires (bounded),
because the same client sends the same token on every call and an ECDSA or RSA
verification costs far more than the rest of the call's bookkeeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from shop.runtime.auth.keys import KeySource
from shop.runtime.auth.principals import EndUser, Unauthenticated

CACHE_LIMIT = 10_000
LEEWAY_S = 30  # clock skew between the identity provider and us


@dataclass(frozen=True)
class BearerSettings:
    jwks: str
    issuer: str
    audience: str


def bearer_token(metadata: dict[str, str]) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, if there is one."""
    header = metadata.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return token.strip()


class BearerVerifier:
    def __init__(self, settings: BearerSettings) -> None:
        self.settings = settings
        self.keys = KeySource(settings.jwks)
        self._verified: dict[str, tuple[EndUser, float]] = {}

    async def load(self) -> None:
        await self.keys.load()

    async def verify(self, token: str) -> EndUser:
        cached = self._verified.get(token)
        now = time.time()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("bearer token is malformed") from None
        key_id = header.get("kid")
        candidates = self.keys.candidates(key_id)
        if not candidates and await self.keys.refresh_for(key_id):
            candidates = self.keys.candidates(key_id)
        if not candidates:
            raise Unauthenticated("bearer token is signed by an unknown key")
        claims = None
        for candidate in candidates:
            try:
                claims = jwt.decode(
                    token,
                    candidate.key,
                    algorithms=list(candidate.algorithms),
                    audience=self.settings.audience,
                    issuer=self.settings.issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "sub", "iss", "aud"]},
                )
                break
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("bearer token has expired") from None
            except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
                raise Unauthenticated("bearer token is not for this service") from None
            except jwt.MissingRequiredClaimError as error:
                raise Unauthenticated(f"bearer token lacks the {error.claim!r} claim") from None
            except (jwt.PyJWTError, TypeError, ValueError):
                # Not this key (maybe another key without a kid signed it); a key that
                # cannot even run the token's algorithm is a failed verification too.
                continue
        if claims is None:
            raise Unauthenticated("bearer token signature does not verify")
        user = EndUser(str(claims["sub"]), _scopes(claims))
        if len(self._verified) >= CACHE_LIMIT:
            self._verified.clear()  # crude, but bounded and rare
        self._verified[token] = (user, float(claims["exp"]))
        return user


def _scopes(claims: dict[str, object]) -> frozenset[str]:
    """OAuth 2 puts scopes in a space-separated ``scope``; some providers use a list."""
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(str(item) for item in raw)
    return frozenset()
