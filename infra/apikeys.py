"""Creating, listing and revoking partner API keys. Each change is an audit event appended in
the same transaction as the row the gateway authenticates against."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime

import asyncpg
import msgspec

from domain.access import ApiKeyCreated, ApiKeyRevoked, api_key_stream
from infra.changes import API_KEYS, announce
from infra.eventstore import NO_STREAM, Metadata, PendingAppend, append, read_stream

TOKEN_PREFIX = "tk_live_"
DEFAULT_RATE_LIMIT = 120
# An origin as a browser sends it and CSP's `frame-ancestors` takes it: scheme, host (a leading
# `*.` wildcard allowed; no IPv6 literal, which CSP cannot name), port; no path.
ORIGIN = re.compile(
    r"https?://(?:\*\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::([0-9]{1,5}))?", re.IGNORECASE
)


def origin(text: str) -> str:
    """`text` as an origin a page may be framed from (`https://shop.example.com`), forgiving
    case and a trailing slash; a ValueError says what else is wrong."""
    candidate = text.strip().lower().removesuffix("/")
    found = ORIGIN.fullmatch(candidate)
    if found is None or (found.group(1) is not None and not 0 < int(found.group(1)) < 65536):
        raise ValueError(
            f"allowed origin {text!r} is not an origin like https://shop.example.com"
            " (scheme, host and port only)"
        )
    return candidate


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    organization_id: int
    name: str
    token_prefix: str
    allowed_origins: list[str]
    rate_limit_per_minute: int
    created_at: datetime
    revoked_at: datetime | None


class IssuedKey(msgspec.Struct, frozen=True, kw_only=True):
    """What the creator sees once: the only moment the raw token exists outside a client."""

    key: ApiKey
    token: str


class UnknownApiKey(LookupError):
    pass


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        organization_id=row["organization_id"],
        name=row["name"],
        token_prefix=row["token_prefix"],
        allowed_origins=list(row["allowed_origins"]),
        rate_limit_per_minute=row["rate_limit_per_minute"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def create_key(
    pool: asyncpg.Pool,
    organization_id: int,
    name: str,
    *,
    allowed_origins: list[str] | None = None,
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT,
    metadata: Metadata,
) -> IssuedKey:
    if not name.strip():
        raise ValueError("name must not be empty")
    if rate_limit_per_minute < 1:
        raise ValueError("rate limit must be at least 1 per minute")
    origins = list(dict.fromkeys(origin(o) for o in allowed_origins or []))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key_id = await pool.fetchval("SELECT nextval('api_key_ids')")
    created = ApiKeyCreated(
        key_id=key_id,
        organization_id=organization_id,
        name=name,
        allowed_origins=origins,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    async with pool.acquire() as conn, conn.transaction():
        await append(conn, [PendingAppend(api_key_stream(key_id), NO_STREAM, [created])], metadata)
        row = await conn.fetchrow(
            "INSERT INTO api_keys (id, organization_id, name, token_hash, token_prefix,"
            " allowed_origins, rate_limit_per_minute) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " RETURNING *",
            key_id,
            organization_id,
            name,
            hash_token(token),
            token[: len(TOKEN_PREFIX) + 4],
            origins,
            rate_limit_per_minute,
        )
        await announce(conn, API_KEYS)
    return IssuedKey(key=_key(row), token=token)


async def list_keys(pool: asyncpg.Pool, organization_id: int) -> list[ApiKey]:
    rows = await pool.fetch(
        "SELECT * FROM api_keys WHERE organization_id = $1 ORDER BY id", organization_id
    )
    return [_key(r) for r in rows]


async def revoke_key(pool: asyncpg.Pool, key_id: int, metadata: Metadata) -> ApiKey:
    """Revoking twice is harmless: the second call changes nothing and appends nothing."""
    history = await read_stream(pool, api_key_stream(key_id))
    if not history:
        raise UnknownApiKey(key_id)
    if any(isinstance(e.event(), ApiKeyRevoked) for e in history):
        row = await pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
        return _key(row)
    async with pool.acquire() as conn, conn.transaction():
        stream = api_key_stream(key_id)
        await append(
            conn, [PendingAppend(stream, len(history), [ApiKeyRevoked(key_id=key_id)])], metadata
        )
        row = await conn.fetchrow(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 RETURNING *", key_id
        )
        await announce(conn, API_KEYS)
    return _key(row)


async def live_key(pool: asyncpg.Pool, key_id: int) -> ApiKey | None:
    """The key by id while it is not revoked (an embed token names the key that minted it)."""
    row = await pool.fetchrow("SELECT * FROM api_keys WHERE id = $1 AND revoked_at IS NULL", key_id)
    return _key(row) if row else None


async def authenticate(pool: asyncpg.Pool, token: str) -> ApiKey | None:
    """The live key for a raw token, or None. Gateways keep the answer until `API_KEYS` is
    announced: every change to a key's row announces it in the same transaction."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = await pool.fetchrow(
        "SELECT * FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL", hash_token(token)
    )
    return _key(row) if row else None
