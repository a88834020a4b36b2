"""Where the keys that verify bearer tokens come from (``SHOP_AUTH_JWKS``).

A deployment names one source:

- an ``https://`` (or, on loopback, ``http://``) URL of a JWKS, as identity
  providers publish it: fetched at start-up, fetched again when a token names a key
  id we have not seen (the provider rotated its keys), at most every
  ``REFRESH_MIN_INTERVAL_S`` so a flood of forged key ids cannot turn into a flood
  of requests;
- a file holding a JWKS (a Kubernetes Secret or ConfigMap mounted in the pod);
- a file holding a PEM public key or certificate (what ``helm``'s ``genCA`` makes
  for the chart's built-in demo issuer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shop.runtime.config import ConfigError, StartupError

log = logging.getLogger(__name__)

REFRESH_MIN_INTERVAL_S = 30.0
FETCH_TIMEOUT_S = 5.0
# What a verifier accepts; never "none" and never a symmetric algorithm (a public
# key read as an HMAC secret is the classic JWT forgery).
ASYMMETRIC_ALGORITHMS = ("ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA")


@dataclass(frozen=True)
class VerificationKey:
    key: Any  # a cryptography public key object
    key_id: str | None
    algorithms: tuple[str, ...]


def _keys_from_jwks(document: Any, origin: str) -> list[VerificationKey]:
    try:
        key_set = jwt.PyJWKSet.from_dict(document)
    except (jwt.PyJWKSetError, jwt.InvalidKeyError, TypeError, KeyError) as error:
        raise ValueError(f"{origin} is not a usable JWKS ({error})") from None
    keys = []
    for jwk in key_set.keys:
        algorithm = jwk.algorithm_name
        allowed = (algorithm,) if algorithm in ASYMMETRIC_ALGORITHMS else ()
        if not allowed:
            continue  # a symmetric or unsupported key: never used to verify users
        keys.append(VerificationKey(jwk.key, jwk.key_id, allowed))
    if not keys:
        raise ValueError(f"{origin} holds no asymmetric signing key")
    return keys


def _keys_from_pem(data: bytes, origin: str) -> list[VerificationKey]:
    try:
        if b"CERTIFICATE" in data:
            public_key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = load_pem_public_key(data)
    except ValueError:
        raise ValueError(
            f"{origin} is neither a JWKS nor a PEM public key or certificate"
        ) from None
    algorithms = _algorithms_for(public_key)
    if not algorithms:
        raise ValueError(f"{origin} holds a key type that cannot verify tokens here")
    return [VerificationKey(public_key, None, algorithms)]


def _algorithms_for(public_key: Any) -> tuple[str, ...]:
    """The algorithms a bare public key can verify: only its own key type's, so a token
    claiming another algorithm is refused as unverifiable, not fed to the wrong math."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return ("RS256", "RS384", "RS512", "PS256")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": ("ES256",), "secp384r1": ("ES384",)}.get(public_key.curve.name, ())
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ("EdDSA",)
    return ()


def parse_key_document(data: bytes, origin: str) -> list[VerificationKey]:
    """The verification keys in a JWKS or PEM document."""
    stripped = data.strip()
    if stripped.startswith(b"{"):
        try:
            document = json.loads(stripped)
        except ValueError:
            raise ValueError(f"{origin} is not valid JSON") from None
        return _keys_from_jwks(document, origin)
    return _keys_from_pem(stripped, origin)


class KeySource:
    """The current verification keys; ``refresh`` only does something for URLs."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._keys: list[VerificationKey] = []
        self._is_url = location.startswith(("https://", "http://"))
        self._last_fetch = 0.0
        self._refreshing: asyncio.Lock | None = None

    async def load(self) -> None:
        """Reads the keys once at start-up; a source that cannot be read stops the start."""
        if not self._is_url:
            try:
                data = await asyncio.to_thread(Path(self.location).read_bytes)
            except OSError as error:
                raise ConfigError(
                    f"SHOP_AUTH_JWKS={self.location!r}: cannot read it ({error.strerror})"
                ) from None
            try:
                self._keys = parse_key_document(data, f"SHOP_AUTH_JWKS={self.location!r}")
            except ValueError as error:
                raise ConfigError(str(error)) from None
            return
        try:
            await self._fetch()
        except (OSError, ValueError) as error:
            raise StartupError(f"cannot load the JWKS from {self.location}: {error}") from None

    async def _fetch(self) -> None:
        self._last_fetch = time.monotonic()
        data = await asyncio.to_thread(self._download)
        self._keys = parse_key_document(data, self.location)

    def _download(self) -> bytes:
        request = urllib.request.Request(self.location, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            body: bytes = response.read(1_000_000)
        return body

    def candidates(self, key_id: str | None) -> list[VerificationKey]:
        """Keys that may have signed a token with this ``kid`` header."""
        if key_id is None:
            return self._keys
        return [k for k in self._keys if k.key_id in (key_id, None)]

    async def refresh_for(self, key_id: str | None) -> bool:
        """Fetches the JWKS again if a token names a key we lack; True if it did."""
        if not self._is_url or time.monotonic() - self._last_fetch < REFRESH_MIN_INTERVAL_S:
            return False
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if self.candidates(key_id) or (
                time.monotonic() - self._last_fetch < REFRESH_MIN_INTERVAL_S
            ):
                return True  # another call refreshed it meanwhile
            try:
                await self._fetch()
            except (OSError, ValueError) as error:
                # Keep the old keys: an IdP hiccup must not log everyone out.
                log.warning(
                    "JWKS refresh failed", extra={"url": self.location, "error": str(error)}
                )
                return False
        return True
