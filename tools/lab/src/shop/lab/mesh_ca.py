"""The mesh's certificate authority: workload identities in Istio's form.

istiod signs a certificate for every sidecar whose only name is the workload's SPIFFE
id, ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``, as a URI subject
alternative name; sidecars present it to each other (mutual TLS) and authorization
policies match callers by it. The lab's control plane does the same with a root made
for the run: an EC P-256 key, never written to disk, that signs one short-lived leaf
per pod. The sidecars get leaf, key and root over SDS, as Istio's do.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
NAMESPACE = "shop"
# Long enough for any lab run; a real mesh rotates leaves every 24 h.
_LEAF_LIFETIME = datetime.timedelta(hours=12)
_ROOT_LIFETIME = datetime.timedelta(days=2)
# Tolerates a clock a little behind between signing and checking.
_BACKDATE = datetime.timedelta(minutes=5)


def spiffe_id(service_account: str, namespace: str = NAMESPACE) -> str:
    """``spiffe://cluster.local/ns/shop/sa/<account>``: what a sidecar's certificate says."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def principal(service_account: str, namespace: str = NAMESPACE) -> str:
    """The same identity as an AuthorizationPolicy writes it (no ``spiffe://``)."""
    return spiffe_id(service_account, namespace).removeprefix("spiffe://")


def _key_usage(**granted: bool) -> x509.KeyUsage:
    """A KeyUsage extension with only the ``granted`` usages set."""
    names = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    return x509.KeyUsage(**{name: granted.get(name, False) for name in names})


@dataclass(frozen=True)
class WorkloadCertificate:
    """One workload's leaf, its key and the root that both sides trust, PEM-encoded."""

    identity: str
    certificate_pem: bytes
    private_key_pem: bytes
    root_pem: bytes


class MeshCa:
    """A root made for one lab run that signs one leaf per workload identity."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                x509.NameAttribute(NameOID.COMMON_NAME, "grpc-shop lab mesh root"),
            ]
        )
        self._name = name
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.root_pem = self.root.public_bytes(serialization.Encoding.PEM)
        self._issued: dict[str, WorkloadCertificate] = {}

    def issue(self, service_account: str, namespace: str = NAMESPACE) -> WorkloadCertificate:
        """The leaf for ``service_account`` (one per identity, made on first use):
        usable as server and client certificate, like istiod's."""
        identity = spiffe_id(service_account, namespace)
        issued = self._issued.get(identity)
        if issued is not None:
            return issued
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            # Istio's leaves have an empty subject: the URI SAN is the identity.
            .subject_name(x509.Name([]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LEAF_LIFETIME)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                critical=True,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        issued = WorkloadCertificate(
            identity=identity,
            certificate_pem=leaf.public_bytes(serialization.Encoding.PEM),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            root_pem=self.root_pem,
        )
        self._issued[identity] = issued
        return issued
