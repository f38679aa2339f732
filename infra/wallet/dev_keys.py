"""Signing identities for development, made here when no real ones are configured: a CA
standing in for Apple's WWDR intermediate with a pass certificate under it, and an RSA key
standing in for a Google service account. Passes signed with them are well formed and verify
against these certificates, but no iPhone installs them and Google rejects their JWTs.

Each is made once into the data folder (one PEM file, readable by its owner only) and reused,
or, without a folder, kept in memory for the process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.secret_files import kept
from infra.wallet.apple import AppleIdentity
from infra.wallet.google import GoogleIdentity

APPLE_FILE = "apple-development.pem"
GOOGLE_FILE = "google-development.pem"
PASS_TYPE_ID = "pass.dev.linjerum.ticket"
TEAM_ID = "LINJERUMDV"
ISSUER_ID = "linjerum-dev"
SERVICE_ACCOUNT = "wallet@linjerum-dev.invalid"
VALID_FOR = timedelta(days=3650)
_PEM = serialization.Encoding.PEM


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def apple_bundle() -> bytes:
    """The pass key, the pass certificate and the CA's certificate, in one PEM."""
    ca_key, pass_key = _key(), _key()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "linjerum development WWDR stand-in"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "linjerum (development)"),
        ]
    )
    pass_name = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, PASS_TYPE_ID),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Pass Type ID: {PASS_TYPE_ID}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, TEAM_ID),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "linjerum (development)"),
        ]
    )
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    certificate = _certificate(pass_name, pass_key, ca_name, ca_key, ca=False)
    return _key_pem(pass_key) + certificate.public_bytes(_PEM) + ca.public_bytes(_PEM)


def apple(folder: Path | None, pass_type_id: str = "", team_id: str = "") -> AppleIdentity:
    """The development identity of `folder` (made there on first use); ids given here are
    written into passes instead of the certificate's own."""
    bundle = kept(folder / APPLE_FILE, apple_bundle) if folder else apple_bundle()
    certificate, ca = x509.load_pem_x509_certificates(bundle)
    return AppleIdentity.from_pem(
        certificate.public_bytes(_PEM),
        bundle,
        ca.public_bytes(_PEM),
        pass_type_id,
        team_id,
        development=True,
    )


def google(folder: Path | None, issuer_id: str = "") -> GoogleIdentity:
    pem = kept(folder / GOOGLE_FILE, lambda: _key_pem(_key())) if folder else _key_pem(_key())
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return GoogleIdentity(issuer_id or ISSUER_ID, SERVICE_ACCOUNT, key, development=True)
