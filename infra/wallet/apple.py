"""Apple Wallet passes: a .pkpass is a zip of pass.json, its images, manifest.json (the SHA-1 of
every other file) and `signature`, a detached PKCS#7 signature of the manifest made with the
pass type's certificate, carrying Apple's WWDR intermediate so a device can check the chain."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from infra.wallet.images import ticket_mark
from infra.wallet.ticket import GENERAL_ADMISSION, WalletTicket, rgb, text_color

PKPASS = "application/vnd.apple.pkpass"
# Points at 1x and 2x: Apple's sizes for an event ticket's icon and logo.
IMAGES = {
    "icon.png": (29, 29),
    "icon@2x.png": (58, 58),
    "logo.png": (160, 50),
    "logo@2x.png": (320, 100),
}
_DETACHED = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]


@dataclass(frozen=True)
class AppleIdentity:
    """What signs passes: the pass type's certificate and key, Apple's WWDR intermediate, and
    the ids pass.json must repeat. `development`: made here, not by Apple (no iPhone installs
    such a pass)."""

    certificate: x509.Certificate
    key: pkcs7.PKCS7PrivateKeyTypes
    wwdr: x509.Certificate
    pass_type_id: str
    team_id: str
    development: bool = False

    @classmethod
    def from_pem(
        cls,
        certificate: bytes,
        key: bytes,
        wwdr: bytes,
        pass_type_id: str = "",
        team_id: str = "",
        development: bool = False,
    ) -> AppleIdentity:
        """Without ids given, those of the certificate: Apple writes the pass type id as its
        subject's UID and the team id as its OU."""
        cert = load_certificate(certificate)
        private = serialization.load_pem_private_key(key, password=None)
        if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SystemExit("the Apple pass key must be an RSA or EC private key (PEM)")
        pass_type_id = pass_type_id or _subject(cert, NameOID.USER_ID)
        team_id = team_id or _subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
        if not (pass_type_id and team_id):
            raise SystemExit(
                "the Apple pass certificate names no pass type id or team id: set"
                " LINJERUM_APPLE_PASS_TYPE_ID and LINJERUM_APPLE_TEAM_ID"
            )
        return cls(cert, private, load_certificate(wwdr), pass_type_id, team_id, development)


def load_certificate(data: bytes) -> x509.Certificate:
    """PEM or DER: Apple hands out the WWDR certificate as DER (.cer)."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    found = cert.subject.get_attributes_for_oid(oid)
    return str(found[0].value) if found else ""


def _date(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _field(key: str, label: str, value: object, **extra: str) -> dict[str, Any]:
    return {"key": key, "label": label, "value": value, **extra}


def _css(color: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*color)


def _event_ticket(ticket: WalletTicket) -> dict[str, Any]:
    header = []
    if ticket.starts_at is not None:
        header.append(
            _field(
                "date",
                "DATE",
                _date(ticket.starts_at),
                dateStyle="PKDateStyleMedium",
                timeStyle="PKDateStyleShort",
            )
        )
    elif ticket.visit_date is not None:
        header.append(_field("date", "VISIT", ticket.visit_date.isoformat()))
    secondary = [_field("venue", "VENUE", ticket.venue_name)]
    if ticket.holder_name:
        secondary.append(_field("holder", "NAME", ticket.holder_name))
    if ticket.seated:
        auxiliary = [
            _field("section", "SECTION", ticket.section_name or ""),
            _field("row", "ROW", ticket.row or ""),
            _field("seat", "SEAT", str(ticket.seat_number)),
        ]
    else:
        auxiliary = [_field("admission", "ADMISSION", GENERAL_ADMISSION)]
    back = [
        _field("type", "TICKET", ticket.ticket_type_name),
        _field("code", "CODE", ticket.code),
    ]
    if ticket.venue_address:
        back.append(_field("address", "ADDRESS", ticket.venue_address))
    if ticket.voided:
        back.append(_field("status", "STATUS", "Refunded: this ticket no longer admits anyone"))
    return {
        "headerFields": header,
        "primaryFields": [_field("event", "EVENT", ticket.product_name)],
        "secondaryFields": secondary,
        "auxiliaryFields": auxiliary,
        "backFields": back,
    }


def pass_json(ticket: WalletTicket, identity: AppleIdentity) -> dict[str, Any]:
    barcode = {
        "format": "PKBarcodeFormatQR",
        "message": ticket.code,
        "messageEncoding": "iso-8859-1",
        "altText": ticket.code,
    }
    background = rgb(ticket.color)
    document: dict[str, Any] = {
        "formatVersion": 1,
        "passTypeIdentifier": identity.pass_type_id,
        "teamIdentifier": identity.team_id,
        "serialNumber": ticket.serial,
        "organizationName": ticket.organization_name,
        "description": f"Ticket: {ticket.product_name}",
        "logoText": ticket.organization_name,
        "backgroundColor": _css(background),
        "foregroundColor": _css(text_color(ticket.color)),
        "labelColor": _css(text_color(ticket.color)),
        "barcodes": [barcode],
        "barcode": barcode,  # iOS 8 and older read only this one
        "eventTicket": _event_ticket(ticket),
    }
    if ticket.starts_at is not None:
        document["relevantDate"] = _date(ticket.starts_at)
    if ticket.scannable_until is not None:
        document["expirationDate"] = _date(ticket.scannable_until)
    if ticket.voided:
        document["voided"] = True
    return document


def manifest(files: dict[str, bytes]) -> bytes:
    return json.dumps(
        {name: hashlib.sha1(data).hexdigest() for name, data in files.items()},
        sort_keys=True,
    ).encode()


def sign_manifest(manifest_json: bytes, identity: AppleIdentity) -> bytes:
    """The detached PKCS#7 (DER) signature: signer the pass certificate, SHA-256, with the
    signing time among the signed attributes, the WWDR intermediate included."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(manifest_json)
        .add_signer(identity.certificate, identity.key, hashes.SHA256())
        .add_certificate(identity.wwdr)
        .sign(serialization.Encoding.DER, _DETACHED)
    )


def build_pkpass(ticket: WalletTicket, identity: AppleIdentity) -> bytes:
    files = {"pass.json": json.dumps(pass_json(ticket, identity), ensure_ascii=False).encode()}
    for name, size in IMAGES.items():
        files[name] = ticket_mark(*size, rgb(ticket.color))
    files["manifest.json"] = manifest(files)
    files["signature"] = sign_manifest(files["manifest.json"], identity)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()
