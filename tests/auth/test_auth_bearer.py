"""End users' bearer tokens: what verifies, what does not, and where keys come from.

Real tokens signed by real keys (the demo issuer, and keys made here to play an
attacker or a rotating identity provider); the JWKS URL is served over loopback
HTTP by a real server.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from shop.credentials import LocalCredentials, TokenIssuer
from shop.runtime.auth import keys as key_sources
from shop.runtime.auth.bearer import BearerSettings, BearerVerifier, bearer_token
from shop.runtime.auth.principals import Unauthenticated
from shop.runtime.config import ConfigError


def settings(jwks: str) -> BearerSettings:
    return BearerSettings(jwks=jwks, issuer="grpc-shop", audience="grpc-shop")


async def verifier_for(jwks: str) -> BearerVerifier:
    verifier = BearerVerifier(settings(jwks))
    await verifier.load()
    return verifier


async def test_a_token_from_the_issuer_verifies_with_its_subject_and_scopes(
    credentials: LocalCredentials,
) -> None:
    verifier = await verifier_for(str(credentials.jwks))
    issuer = credentials.issuer()
    user = await verifier.verify(issuer.token("cust-7"))
    assert (user.subject, user.is_admin) == ("cust-7", False)
    admin = await verifier.verify(issuer.token("ops", admin=True))
    assert admin.is_admin


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c | {"exp": int(time.time()) - 3600}, "expired"),
        (lambda c: c | {"aud": "someone-else"}, "not for this service"),
        (lambda c: c | {"iss": "https://evil.example"}, "not for this service"),
        (lambda c: {k: v for k, v in c.items() if k != "sub"}, "'sub'"),
    ],
    ids=["expired", "audience", "issuer", "no-subject"],
)
async def test_claims_that_do_not_fit_are_refused(
    credentials: LocalCredentials, mutate: object, message: str
) -> None:
    verifier = await verifier_for(str(credentials.jwks))
    issuer = credentials.issuer()
    claims = jwt.decode(issuer.token("cust-1"), options={"verify_signature": False})
    key = serialization.load_pem_private_key(credentials.issuer_key.read_bytes(), None)
    forged = jwt.encode(mutate(claims), key, algorithm="ES256", headers={"kid": issuer.key_id})  # type: ignore[operator,arg-type]
    with pytest.raises(Unauthenticated, match=message):
        await verifier.verify(forged)


async def test_a_token_signed_by_another_key_is_refused(credentials: LocalCredentials) -> None:
    verifier = await verifier_for(str(credentials.jwks))
    stranger = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.verify(stranger.token("cust-1"))
    # Same kid as ours, other key: the signature check is what refuses it.
    real_kid = credentials.issuer().key_id
    forged = jwt.encode(
        {"sub": "cust-1", "iss": "grpc-shop", "aud": "grpc-shop", "exp": int(time.time()) + 60},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": real_kid},
    )
    with pytest.raises(Unauthenticated, match="signature"):
        await verifier.verify(forged)


async def test_unsigned_and_symmetric_tokens_are_refused(credentials: LocalCredentials) -> None:
    """alg=none, and HS256 keyed with the public JWKS (the classic confusion attack)."""
    verifier = await verifier_for(str(credentials.jwks))
    claims = {"sub": "cust-1", "iss": "grpc-shop", "aud": "grpc-shop",
              "exp": int(time.time()) + 60}  # fmt: skip
    kid = credentials.issuer().key_id
    # "" is PyJWT's typed spelling of no key (it signs alg=none with None).
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": kid})
    with pytest.raises(Unauthenticated):
        await verifier.verify(unsigned)
    # PyJWT itself refuses to sign with a JWK as an HMAC secret, so sign by hand, as
    # an attacker would.
    confused = _hs256({"alg": "HS256", "typ": "JWT", "kid": kid}, claims,
                      credentials.jwks.read_bytes())  # fmt: skip
    with pytest.raises(Unauthenticated):
        await verifier.verify(confused)


def _hs256(header: dict[str, object], claims: dict[str, object], secret: bytes) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer    ", "token"])
def test_an_authorization_header_that_is_not_bearer_is_refused(header: str) -> None:
    with pytest.raises(Unauthenticated, match="Bearer"):
        bearer_token({"authorization": header})
    assert bearer_token({}) is None


async def test_a_pem_certificate_is_a_key_source(tmp_path: Path) -> None:
    """The chart's demo issuer is a self-signed certificate from helm's genCA (RSA)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grpc-shop demo issuer")])
    now = time.time()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_utc(now - 60))
        .not_valid_after(_utc(now + 3600))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "issuer.crt"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    verifier = await verifier_for(str(path))
    # genCA's key is PKCS#1 ("RSA PRIVATE KEY"): the load generator signs with it.
    key_path = tmp_path / "issuer-key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    issuer = TokenIssuer.from_file(key_path)
    assert issuer.algorithm == "RS256"
    assert (await verifier.verify(issuer.token("cust-9"))).subject == "cust-9"
    # A token of another key type (ES256 against this RSA key) does not verify; it
    # must not reach PyJWT as an algorithm the key cannot run (a TypeError: INTERNAL).
    stranger = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(Unauthenticated, match="does not verify"):
        await verifier.verify(stranger.token("cust-9"))
    # The same issuer's JWKS (RSA) verifies it too.
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(issuer.jwks()))
    rsa_jwks = await verifier_for(str(jwks_path))
    assert (await rsa_jwks.verify(issuer.token("cust-9", admin=True))).is_admin


async def test_only_p256_or_rsa_keys_make_an_issuer(tmp_path: Path) -> None:
    other_curve = tmp_path / "p384.pem"
    other_curve.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="P-256 EC or a 2048"):
        TokenIssuer.from_file(other_curve)
    with pytest.raises(ValueError, match="not a readable PEM"):
        TokenIssuer.from_file(tmp_path / "missing.pem")


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _published_keys(issuer: TokenIssuer) -> list[object]:
    keys = issuer.jwks()["keys"]
    assert isinstance(keys, list), keys
    return keys


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key", "neither a JWKS nor a PEM"),
        (b"{", "not valid JSON"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}', "no asymmetric"),
    ],
)
async def test_an_unusable_key_file_stops_the_start_naming_the_variable(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "jwks"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        await verifier_for(str(path))
    assert "SHOP_AUTH_JWKS" in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        await verifier_for(str(tmp_path / "missing.json"))


class _JwksServer:
    """A loopback HTTP server publishing a JWKS that the test can rotate."""

    def __init__(self) -> None:
        self.document: dict[str, object] = {"keys": []}
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def jwks_server() -> Iterator[_JwksServer]:
    server = _JwksServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(5)


async def test_a_jwks_url_is_fetched_again_when_the_provider_rotates_its_key(
    jwks_server: _JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
    second = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
    jwks_server.document = first.jwks()
    verifier = await verifier_for(jwks_server.url)
    assert (await verifier.verify(first.token("a"))).subject == "a"
    assert jwks_server.requests == 1
    # Rotation: the provider now signs with a new key and publishes it.
    jwks_server.document = {"keys": [*_published_keys(second), *_published_keys(first)]}
    # Within the refresh interval an unknown kid is refused without a fetch (a flood
    # of forged kids must not become a flood of requests to the provider)...
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.verify(second.token("b"))
    assert jwks_server.requests == 1
    # ...after it, the unknown kid triggers one fetch and then verifies.
    monkeypatch.setattr(key_sources, "REFRESH_MIN_INTERVAL_S", 0.0)
    assert (await verifier.verify(second.token("b"))).subject == "b"
    assert jwks_server.requests == 2


async def test_an_unreachable_jwks_url_stops_the_start() -> None:
    from shop.local.addresses import free_port
    from shop.runtime.config import StartupError

    with pytest.raises(StartupError, match="cannot load the JWKS"):
        await verifier_for(f"http://127.0.0.1:{free_port()}/jwks.json")
