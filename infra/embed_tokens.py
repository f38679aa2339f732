"""Signed tokens for the embeddable seat planner and seat-plan editor. A token names what it
opens (a planner for one event, an editor for one venue), the organization, the API key that
minted it (whose `allowed_origins` decide who may frame the page) and its expiry, with an HMAC
over all of them. Nothing is stored per token.

Rotation: set LINJERUM_EMBED_SECRET to the new secret and LINJERUM_EMBED_PREVIOUS_SECRET to the
old one. Tokens signed with the previous secret keep verifying only while unexpired, at most
TOKEN_SECONDS (15 minutes) after the rotation; the previous secret may be dropped after that."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from infra.secret_files import kept
from infra.settings import Settings

SECRET_FILE = "embed-secret"
MIN_SECRET_BYTES = 16
TOKEN_SECONDS = 900
# How far another gateway's clock may run ahead of this one's when it signs a token.
CLOCK_SKEW_SECONDS = 60
Kind = Literal["planner", "editor"]
_KIND_CODES: dict[Kind, int] = {"planner": 1, "editor": 2}
_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
# Kind, subject (event or venue id), organization id, API key id, expiry in Unix seconds.
_CLAIMS = struct.Struct(">BQQQq")
MAC_BYTES = 16
_TOKEN_BYTES = _CLAIMS.size + MAC_BYTES
TOKEN = re.compile(f"[A-Za-z0-9_-]{{{-(-_TOKEN_BYTES * 4 // 3)}}}")
_PURPOSE = b"linjerum-embed\0"

Refusal = Literal["malformed", "forged", "expired", "wrong_kind"]


class EmbedRefused(Exception):
    """The token opens nothing: `malformed`, `forged` (not signed by a secret we hold, or
    altered), `expired`, or `wrong_kind` (an editor's token on the planner, say)."""

    def __init__(self, reason: Refusal, claims: EmbedClaims | None = None) -> None:
        super().__init__(reason)
        self.reason: Refusal = reason
        # An expired or wrong-kind token's, which was signed by us all the same.
        self.claims = claims


@dataclass(frozen=True)
class EmbedClaims:
    kind: Kind
    subject_id: int
    organization_id: int
    api_key_id: int
    expires_at: datetime


class EmbedSigner:
    def __init__(
        self, secret: bytes, previous: bytes | None = None, rotated_at: datetime | None = None
    ) -> None:
        """`previous`: the secret before a rotation at `rotated_at` (default: now, as the
        gateway starts with the new one). Its tokens verify for 15 minutes after it, however
        long it stays configured: every token it signed before has expired by then."""
        for given in (secret, previous or secret):
            if len(given) < MIN_SECRET_BYTES:
                raise ValueError(f"an embed secret has at least {MIN_SECRET_BYTES} bytes")
        self._secrets = (secret, previous) if previous else (secret,)
        lasts = timedelta(seconds=TOKEN_SECONDS + CLOCK_SKEW_SECONDS)
        self._previous_until = (rotated_at or datetime.now(UTC)) + lasts

    @classmethod
    def development(cls) -> EmbedSigner:
        """A random secret in memory, one for every gateway this process starts (tests,
        benchmarks): its tokens open pages of this process only."""
        return _in_memory()

    def mint(
        self, kind: Kind, subject_id: int, organization_id: int, api_key_id: int, now: datetime
    ) -> tuple[str, EmbedClaims]:
        expires_at = now.replace(microsecond=0) + timedelta(seconds=TOKEN_SECONDS)
        claims = EmbedClaims(kind, subject_id, organization_id, api_key_id, expires_at)
        packed = _CLAIMS.pack(
            _KIND_CODES[kind], subject_id, organization_id, api_key_id, int(expires_at.timestamp())
        )
        return _encoded(packed + _mac(self._secrets[0], packed)), claims

    def verify(self, token: str, kind: Kind, now: datetime) -> EmbedClaims:
        """The claims of a token signed by the current or the previous secret, unexpired and of
        the kind asked for."""
        if not TOKEN.fullmatch(token):
            raise EmbedRefused("malformed")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise EmbedRefused("malformed") from None
        if _encoded(raw) != token:
            raise EmbedRefused("malformed")  # stray bits in the last character: one spelling
        packed, mac = raw[: _CLAIMS.size], raw[_CLAIMS.size :]
        signed_by = [hmac.compare_digest(mac, _mac(s, packed)) for s in self._secrets]
        if not any(signed_by):
            raise EmbedRefused("forged")
        if not signed_by[0] and now >= self._previous_until:
            raise EmbedRefused("forged")  # the previous secret, past its rotation's 15 minutes
        code, subject_id, organization_id, api_key_id, expires = _CLAIMS.unpack(packed)
        if code not in _KINDS:
            raise EmbedRefused("malformed")
        try:
            expires_at = datetime.fromtimestamp(expires, UTC)
        except (OverflowError, ValueError, OSError):
            raise EmbedRefused("malformed") from None
        claims = EmbedClaims(_KINDS[code], subject_id, organization_id, api_key_id, expires_at)
        if expires_at - now > timedelta(seconds=TOKEN_SECONDS + CLOCK_SKEW_SECONDS):
            raise EmbedRefused("forged")  # we never sign one that lives longer
        if now >= expires_at:
            raise EmbedRefused("expired", claims)
        if claims.kind != kind:
            raise EmbedRefused("wrong_kind", claims)
        return claims


@functools.cache
def _in_memory() -> EmbedSigner:
    return EmbedSigner(secrets.token_bytes(32))


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac(secret: bytes, packed: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE + packed, hashlib.sha256).digest()[:MAC_BYTES]


def _configured(name: str, value: str) -> bytes:
    secret = value.encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise SystemExit(f"{name} must have at least {MIN_SECRET_BYTES} bytes")
    return secret


def embed_signer(settings: Settings) -> EmbedSigner:
    """LINJERUM_EMBED_SECRET, else a random one made once into the data folder (gateways that
    do not share the folder must be given the same secret); LINJERUM_EMBED_PREVIOUS_SECRET is
    the one before a rotation."""
    if settings.embed_secret:
        secret = _configured("LINJERUM_EMBED_SECRET", settings.embed_secret)
    else:
        made = kept(settings.data_dir / SECRET_FILE, lambda: secrets.token_urlsafe(32).encode())
        secret = made.strip()
    previous, rotated_at = None, None
    if settings.embed_previous_secret:
        previous = _configured("LINJERUM_EMBED_PREVIOUS_SECRET", settings.embed_previous_secret)
        rotated_at = _rotated_at(settings, previous)
    return EmbedSigner(secret, previous, rotated_at)


def _rotated_at(settings: Settings, previous: bytes) -> datetime:
    """When a gateway on this data folder first started with `previous` as the previous
    secret, kept in the folder: counted from each start, a gateway restarted (a crash, a
    deploy) honoured the old secret for another 15 minutes every time."""
    name = f"embed-rotated-{hashlib.sha256(_PURPOSE + previous).hexdigest()[:16]}"
    first = kept(settings.data_dir / name, lambda: datetime.now(UTC).isoformat().encode())
    try:
        return datetime.fromisoformat(first.decode())
    except ValueError:
        return datetime.now(UTC)
