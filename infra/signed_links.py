"""Signed links that open one ticket without an API key (the e-ticket's). A link names the
ticket and its code generation (how many transfers it has been through) and carries an HMAC
over those, an optional expiry and the ticket's code at that generation. Nothing is stored per
link: a transfer gives the ticket a new code, so every link made before it stops verifying."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from infra.secret_files import kept
from infra.settings import Settings

SECRET_FILE = "link-secret"
MIN_SECRET_BYTES = 16
# Ticket id, generation, expiry in Unix seconds (0: none), then the MAC's first 128 bits.
_CLAIMS = struct.Struct(">QIq")
MAC_BYTES = 16
TOKEN = re.compile(f"[A-Za-z0-9_-]{{{(_CLAIMS.size + MAC_BYTES) * 4 // 3}}}")

Refusal = Literal["malformed", "forged", "expired"]


class LinkRefused(Exception):
    """The token opens nothing: `malformed` (not a token at all), `forged` (not signed for
    this ticket's code at that generation) or `expired`."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason)
        self.reason: Refusal = reason


@dataclass(frozen=True)
class LinkClaims:
    ticket_id: int
    generation: int
    expires_at: datetime | None = None


class LinkSigner:
    def __init__(self, secret: bytes, purpose: str = "eticket") -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a link secret has at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._purpose = purpose.encode() + b"\0"

    def sign(self, claims: LinkClaims, code: str) -> str:
        expires = int(claims.expires_at.timestamp()) if claims.expires_at else 0
        packed = _CLAIMS.pack(claims.ticket_id, claims.generation, expires)
        return base64.urlsafe_b64encode(packed + self._mac(packed, code)).decode()

    def claims(self, token: str) -> LinkClaims:
        """What the token says, not yet checked: which ticket to load to verify it."""
        if not TOKEN.fullmatch(token):
            raise LinkRefused("malformed")
        packed = base64.urlsafe_b64decode(token)[: _CLAIMS.size]
        ticket_id, generation, expires = _CLAIMS.unpack(packed)
        try:
            expires_at = datetime.fromtimestamp(expires, UTC) if expires else None
        except (OverflowError, ValueError, OSError):
            raise LinkRefused("malformed") from None
        return LinkClaims(ticket_id, generation, expires_at)

    def verify(self, token: str, code: str, now: datetime) -> LinkClaims:
        """The claims, if the token was signed for `code` (the ticket's code at the claimed
        generation) and has not expired."""
        claims = self.claims(token)
        raw = base64.urlsafe_b64decode(token)
        packed, mac = raw[: _CLAIMS.size], raw[_CLAIMS.size :]
        if not hmac.compare_digest(mac, self._mac(packed, code)):
            raise LinkRefused("forged")
        if claims.expires_at is not None and now >= claims.expires_at:
            raise LinkRefused("expired")
        return claims

    def _mac(self, packed: bytes, code: str) -> bytes:
        message = self._purpose + packed + code.encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:MAC_BYTES]


def link_secret(settings: Settings) -> bytes:
    """LINJERUM_LINK_SECRET, else a random one made once into the data folder: gateways that do
    not share the folder must be given the same secret, or one's links fail on the others."""
    if settings.link_secret:
        secret = settings.link_secret.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise SystemExit(f"LINJERUM_LINK_SECRET must have at least {MIN_SECRET_BYTES} bytes")
        return secret
    made = kept(settings.data_dir / SECRET_FILE, lambda: secrets.token_urlsafe(32).encode())
    return made.strip()
