"""Credentials for a shop that runs without an identity provider: a demo token
issuer and the internal callers' keys.

A deployment normally trusts its identity provider's JWKS; ``shop up``, the demo,
the lab, the tests and ``shop keys`` need one of their own. :class:`TokenIssuer`
signs end users' (and administrators') tokens with an ECDSA P-256 key; the matching
public key is written as a JWKS, which the services are pointed at through
``SHOP_AUTH_JWKS`` exactly as they would be at a real provider's. Internal keys are
random 32-byte secrets, one file per service, named after it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shop.runtime.auth.principals import ADMIN_SCOPE
from shop.runtime.config import AUTH_AUDIENCE, AUTH_ISSUER

DEFAULT_ISSUER = AUTH_ISSUER.default
DEFAULT_AUDIENCE = AUTH_AUDIENCE.default
# Services that call others, so have a key to sign with (inventory calls nobody).
CALLING_SERVICES = ("gateway", "orders")
TOKEN_LIFETIME_S = 24 * 3600


SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class TokenIssuer:
    """Signs bearer tokens the way an identity provider would: ES256 with a P-256 key
    (what ``shop keys`` makes) or RS256 with an RSA key (what the Helm chart's demo
    issuer, made by helm's ``genCA``, has), with a key id."""

    def __init__(
        self,
        private_key: SigningKey,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self._key = private_key
        self.algorithm = "RS256" if isinstance(private_key, rsa.RSAPrivateKey) else "ES256"
        self.issuer = issuer
        self.audience = audience
        self.key_id = _key_id(private_key.public_key())

    @classmethod
    def from_file(
        cls, path: Path, issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_AUDIENCE
    ) -> TokenIssuer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable PEM private key ({error})") from None
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return cls(key, issuer, audience)
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
            return cls(key, issuer, audience)
        raise ValueError(f"{path}: expected a P-256 EC or a 2048+ bit RSA private key")

    def token(
        self, subject: str, *, admin: bool = False, lifetime_s: int = TOKEN_LIFETIME_S
    ) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + lifetime_s,
        }
        if admin:
            claims["scope"] = ADMIN_SCOPE
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self.key_id})

    def jwks(self) -> dict[str, object]:
        """The public half as a JWKS, as a provider publishes it."""
        if isinstance(self._key, rsa.RSAPrivateKey):
            numbers = self._key.public_key().public_numbers()
            fields: dict[str, str] = {
                "kty": "RSA",
                "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            }
        else:
            point = self._key.public_key().public_numbers()
            fields = {
                "kty": "EC",
                "crv": "P-256",
                "x": _b64(point.x.to_bytes(32, "big")),
                "y": _b64(point.y.to_bytes(32, "big")),
            }
        return {"keys": [{**fields, "use": "sig", "alg": self.algorithm, "kid": self.key_id}]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key_id(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64(hashlib.sha256(der).digest()[:12])


def _write_private(path: Path, data: bytes) -> None:
    """Writes a secret readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class LocalCredentials:
    """Files in one directory: ``issuer-key.pem``, ``jwks.json``, ``internal/<service>``."""

    directory: Path

    @property
    def issuer_key(self) -> Path:
        return self.directory / "issuer-key.pem"

    @property
    def jwks(self) -> Path:
        return self.directory / "jwks.json"

    @property
    def internal_keys_dir(self) -> Path:
        return self.directory / "internal"

    def issuer(self) -> TokenIssuer:
        return TokenIssuer.from_file(self.issuer_key)

    def service_env(self) -> dict[str, str]:
        """What a replica needs to authenticate its callers and sign its own calls.

        On one machine every replica reads the same directory; a cluster mounts into
        each pod only the keys that pod needs (the chart does)."""
        return {
            "SHOP_AUTH_JWKS": str(self.jwks.resolve()),
            "SHOP_INTERNAL_KEYS_DIR": str(self.internal_keys_dir.resolve()),
        }


def ensure_credentials(
    directory: Path, services: Iterable[str] = CALLING_SERVICES
) -> LocalCredentials:
    """Creates the demo issuer and internal keys in ``directory`` unless they exist
    (so replicas restarted later, and ``shop token``, keep using the same ones)."""
    credentials = LocalCredentials(directory)
    if not credentials.issuer_key.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(
            credentials.issuer_key,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        credentials.jwks.write_text(json.dumps(TokenIssuer(key).jwks(), indent=2) + "\n")
    for service in services:
        path = credentials.internal_keys_dir / service
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(32).encode() + b"\n")
    return credentials
