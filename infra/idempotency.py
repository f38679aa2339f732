"""Idempotency keys: a retried POST returns the first response instead of buying twice. The
first request claims the key with an insert; concurrent retries see the claim and are told the
original is still running; a different body under the same key is refused."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg
import msgspec

MAX_KEY_LENGTH = 255
KEY_RULE = "must be 1 to 255 printable ASCII characters"
KEPT = "24 hours"
ABANDONED = "5 minutes"


class KeyReused(Exception):
    """The key was first used with a different request."""


class StillRunning(Exception):
    """The first request with this key has not answered yet."""


@dataclass(frozen=True)
class Replay:
    status: int
    body: bytes


def valid_key(key: str) -> bool:
    """Printable ASCII only, as Stripe's keys are: whatever else a header carries (a NUL, a
    byte that is not UTF-8) would fail the insert that claims it."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def request_hash(method: str, path: str, body: bytes) -> bytes:
    """The request's identity: JSON bodies compared by content, not by spacing or key order."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    except msgspec.DecodeError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).digest()


async def claim(pool: asyncpg.Pool, api_key_id: int, key: str, fingerprint: bytes) -> Replay | None:
    """None: the caller owns the key and must `finish` or `abandon` it. A Replay: answer with
    it. Raises KeyReused or StillRunning."""
    owned = await pool.fetchval(
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT (api_key_id, key) DO UPDATE"
        " SET request_hash = EXCLUDED.request_hash, created_at = now(), status = NULL,"
        " body = NULL"
        f" WHERE idempotency_keys.created_at < now() - interval '{KEPT}'"
        " OR (idempotency_keys.status IS NULL"
        f" AND idempotency_keys.created_at < now() - interval '{ABANDONED}')"
        " RETURNING true",
        api_key_id,
        key,
        fingerprint,
    )
    if owned:
        return None
    row = await pool.fetchrow(
        "SELECT request_hash, status, body FROM idempotency_keys"
        " WHERE api_key_id = $1 AND key = $2",
        api_key_id,
        key,
    )
    if row is None:
        return await claim(pool, api_key_id, key, fingerprint)
    if bytes(row["request_hash"]) != fingerprint:
        raise KeyReused
    if row["status"] is None:
        raise StillRunning
    return Replay(row["status"], bytes(row["body"]))


async def finish(pool: asyncpg.Pool, api_key_id: int, key: str, status: int, body: bytes) -> None:
    await pool.execute(
        "UPDATE idempotency_keys SET status = $3, body = $4 WHERE api_key_id = $1 AND key = $2",
        api_key_id,
        key,
        status,
        body,
    )


async def abandon(pool: asyncpg.Pool, api_key_id: int, key: str) -> None:
    """A response that means "try again" is not stored: the retry runs for real."""
    await pool.execute(
        "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND status IS NULL",
        api_key_id,
        key,
    )


async def purge(pool: asyncpg.Pool) -> int:
    result = await pool.execute(
        f"DELETE FROM idempotency_keys WHERE created_at < now() - interval '{KEPT}'"
    )
    return int(result.split()[-1])
