"""Google Wallet's "save to wallet" link: a JWT signed (RS256) with the issuer's service-account
key, carrying the event ticket class (the event: name, venue, start) and the ticket's object
(its barcode, holder and seat). Opening the link saves the pass; no call to Google's API is
needed to hand one out."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from infra.wallet.ticket import GENERAL_ADMISSION, WalletTicket

SAVE_URL = "https://pay.google.com/gp/v/save/"
LANGUAGE = "en"


@dataclass(frozen=True)
class GoogleIdentity:
    """The issuer's id and the service account that signs for it. `development`: a key made
    here, which Google does not know."""

    issuer_id: str
    service_account: str
    key: rsa.RSAPrivateKey
    key_id: str | None = None
    development: bool = False

    @classmethod
    def from_service_account(cls, path: Path, issuer_id: str) -> GoogleIdentity:
        """From the JSON key file Google's console hands out for a service account."""
        account = json.loads(path.read_bytes())
        key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SystemExit(f"{path}: the service account's private_key is not an RSA key")
        return cls(issuer_id, account["client_email"], key, account.get("private_key_id"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def encode_jwt(claims: dict[str, Any], identity: GoogleIdentity) -> str:
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if identity.key_id:
        header["kid"] = identity.key_id
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}"
    signature = identity.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _text(value: str) -> dict[str, Any]:
    """Google's LocalizedString."""
    return {"defaultValue": {"language": LANGUAGE, "value": value}}


def class_id(ticket: WalletTicket, identity: GoogleIdentity) -> str:
    return f"{identity.issuer_id}.{ticket.product_key}"


def object_id(ticket: WalletTicket, identity: GoogleIdentity) -> str:
    """A new id per code generation: a transferred ticket is a new pass."""
    return f"{identity.issuer_id}.{ticket.serial}"


def event_ticket_class(ticket: WalletTicket, identity: GoogleIdentity) -> dict[str, Any]:
    venue: dict[str, Any] = {"name": _text(ticket.venue_name)}
    if ticket.venue_address:
        venue["address"] = _text(ticket.venue_address)
    found: dict[str, Any] = {
        "id": class_id(ticket, identity),
        "issuerName": ticket.organization_name,
        "eventName": _text(ticket.product_name),
        "venue": venue,
        "reviewStatus": "UNDER_REVIEW",
        "hexBackgroundColor": ticket.color,
    }
    if ticket.starts_at is not None:
        found["dateTime"] = {"start": ticket.starts_at.isoformat(timespec="seconds")}
    return found


def _seat_info(ticket: WalletTicket) -> dict[str, Any]:
    if not ticket.seated:
        return {"section": _text(GENERAL_ADMISSION)}
    return {
        "section": _text(ticket.section_name or ""),
        "row": _text(ticket.row or ""),
        "seat": _text(str(ticket.seat_number)),
    }


def event_ticket_object(ticket: WalletTicket, identity: GoogleIdentity) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": object_id(ticket, identity),
        "classId": class_id(ticket, identity),
        "state": "INACTIVE" if ticket.voided else "ACTIVE",
        "barcode": {"type": "QR_CODE", "value": ticket.code, "alternateText": ticket.code},
        "ticketNumber": ticket.code,
        "ticketType": _text(ticket.ticket_type_name),
        "seatInfo": _seat_info(ticket),
        "hexBackgroundColor": ticket.color,
    }
    if ticket.holder_name:
        found["ticketHolderName"] = ticket.holder_name
    if ticket.scannable_until is not None:
        end = ticket.scannable_until.isoformat(timespec="seconds")
        found["validTimeInterval"] = {"end": {"date": end}}
    return found


def save_jwt(
    ticket: WalletTicket, identity: GoogleIdentity, origins: list[str], now: datetime
) -> str:
    return encode_jwt(
        {
            "iss": identity.service_account,
            "aud": "google",
            "typ": "savetowallet",
            "iat": int(now.timestamp()),
            "origins": origins,
            "payload": {
                "eventTicketClasses": [event_ticket_class(ticket, identity)],
                "eventTicketObjects": [event_ticket_object(ticket, identity)],
            },
        },
        identity,
    )


def save_url(jwt: str) -> str:
    return SAVE_URL + jwt
