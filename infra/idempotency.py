"""Idempotency keys: a retried POST returns the first response instead of buying twice. The
first request claims the key with an insert; concurrent retries see the claim and are told the
original is still running; a different body under the same key is refused. A claim names its
claimant, the gateway process running the request: one whose process was killed stops renewing
its life, and a retry takes its keys over at once, deciding with the value the first request
drew, so that what the first request stored is found rather than made again."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import structlog

from infra.supervise import stop_tasks

log = structlog.get_logger(__name__)

MAX_KEY_LENGTH = 255
KEY_RULE = "must be 1 to 255 printable ASCII characters"
KEPT = "24 hours"
# A claim still unanswered this long is taken over whoever holds it.
ABANDONED_SECONDS = 300.0
# A claimant that has not renewed its life for this long is gone; it renews a third as often.
CLAIMANT_SECONDS = 6.0
# An answer the database did not take (unreachable) is stored again this often in the background.
SETTLE_AGAIN_SECONDS = 1.0


class KeyReused(Exception):
    """The key was first used with a different request."""


class StillRunning(Exception):
    """The first request with this key has not answered yet."""


@dataclass(frozen=True)
class Replay:
    status: int
    body: bytes


class Claimant:
    """A gateway process as the runner of the requests whose keys it claims: alive while it
    renews its row in `idempotency_claimants`. An answer it could not store (the database
    unreachable as the request ended) is stored again in the background until it is, so a
    retry is told "in flight" only until the database is back."""

    def __init__(self, pool: asyncpg.Pool, seconds: float = CLAIMANT_SECONDS) -> None:
        self.name = secrets.token_hex(8)
        self._pool = pool
        self._seconds = seconds
        self._unsettled: dict[tuple[int, str], tuple[float, Callable[[], Awaitable[None]]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Alive before it claims a key; a database down at the start is tried again."""
        try:
            async with asyncio.timeout(self._seconds / 3):
                await self._renew()
        except Exception as exc:
            log.info("claimant_work_failed", work="_renew", error=repr(exc))
        self._tasks = [
            asyncio.create_task(self._every(self._seconds / 3, self._renew)),
            asyncio.create_task(self._every(SETTLE_AGAIN_SECONDS, self._settle)),
        ]

    async def stop(self) -> None:
        """Gone at once: requests still holding keys (there should be none) are retried."""
        await stop_tasks(self._tasks)
        try:
            async with asyncio.timeout(2.0):
                await self._pool.execute(
                    "DELETE FROM idempotency_claimants WHERE claimant = $1", self.name
                )
        except Exception as exc:
            log.info("claimant_not_removed", error=repr(exc))

    async def finish(self, api_key_id: int, key: str, status: int, body: bytes) -> None:
        await self._store(
            (api_key_id, key), lambda: finish(self._pool, self.name, api_key_id, key, status, body)
        )

    async def abandon(self, api_key_id: int, key: str) -> None:
        await self._store(
            (api_key_id, key), lambda: abandon(self._pool, self.name, api_key_id, key)
        )

    async def release(self, api_key_id: int, key: str) -> None:
        await self._store(
            (api_key_id, key), lambda: release(self._pool, self.name, api_key_id, key)
        )

    async def _store(self, key: tuple[int, str], store: Callable[[], Awaitable[None]]) -> None:
        try:
            await store()
        except Exception as exc:
            log.warning("idempotency_answer_not_stored", error=repr(exc))
            self._unsettled[key] = (time.monotonic() + ABANDONED_SECONDS, store)

    async def _renew(self) -> None:
        await self._pool.execute(
            "INSERT INTO idempotency_claimants (claimant, alive_until)"
            " VALUES ($1, now() + make_interval(secs => $2))"
            " ON CONFLICT (claimant) DO UPDATE SET alive_until = EXCLUDED.alive_until",
            self.name,
            self._seconds,
        )

    async def _settle(self) -> None:
        """Past ABANDONED_SECONDS a key is taken over anyway: its answer is not worth storing."""
        for key, (until, store) in list(self._unsettled.items()):
            if time.monotonic() > until:
                del self._unsettled[key]
                continue
            await store()
            if self._unsettled.get(key, (until, None))[1] is store:
                del self._unsettled[key]

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        """`work` every `seconds`, from `seconds` after the start (which renewed once)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception as exc:
                log.info("claimant_work_failed", work=work.__name__, error=repr(exc))


def valid_key(key: str) -> bool:
    """Printable ASCII only, as Stripe's keys are: whatever else a header carries (a NUL, a
    byte that is not UTF-8) would fail the insert that claims it."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def request_hash(method: str, path: str, body: bytes) -> bytes:
    """The request's identity: JSON bodies compared by content, not by spacing or key order."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested past decoding: as sent
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).digest()


@dataclass(frozen=True)
class Claim:
    """The caller owns the key. `reserved`: the value the first request under the key drew
    (a purchase's token), the same for every retry that takes the key over; `retaken`: an
    earlier request claimed it and its process stopped before answering, so whatever that
    request stored under `reserved` may exist."""

    reserved: str
    retaken: bool


async def claim(
    pool: asyncpg.Pool, claimant: str, api_key_id: int, key: str, fingerprint: bytes
) -> Claim | Replay:
    """A Claim: the caller owns the key and must `finish` or `abandon` it. A Replay: answer
    with it. Raises KeyReused or StillRunning. A key still claimed, for the same request, by a
    claimant that is gone (or for ABANDONED_SECONDS by one that is not) is taken over."""
    row = await pool.fetchrow(
        "INSERT INTO idempotency_keys AS k (api_key_id, key, request_hash, claimed_by, reserved)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (api_key_id, key) DO UPDATE"
        " SET request_hash = EXCLUDED.request_hash, created_at = now(), status = NULL,"
        " body = NULL, claimed_by = EXCLUDED.claimed_by,"
        f" reserved = CASE WHEN k.created_at < now() - interval '{KEPT}' THEN EXCLUDED.reserved"
        " ELSE coalesce(k.reserved, EXCLUDED.reserved) END"
        f" WHERE k.created_at < now() - interval '{KEPT}'"
        " OR (k.status IS NULL AND k.request_hash = EXCLUDED.request_hash"
        f" AND (k.created_at < now() - interval '{ABANDONED_SECONDS:g} seconds' OR NOT EXISTS ("
        " SELECT 1 FROM idempotency_claimants c"
        " WHERE c.claimant = k.claimed_by AND c.alive_until > now())))"
        " RETURNING reserved, NOT (xmax = 0) AS retaken",
        api_key_id,
        key,
        fingerprint,
        claimant,
        secrets.token_urlsafe(18),
    )
    if row is not None:
        return Claim(row["reserved"], row["retaken"])
    row = await pool.fetchrow(
        "SELECT request_hash, status, body FROM idempotency_keys"
        " WHERE api_key_id = $1 AND key = $2",
        api_key_id,
        key,
    )
    if row is None:
        return await claim(pool, claimant, api_key_id, key, fingerprint)
    if bytes(row["request_hash"]) != fingerprint:
        raise KeyReused
    if row["status"] is None:
        raise StillRunning
    return Replay(row["status"], bytes(row["body"]))


async def finish(
    pool: asyncpg.Pool, claimant: str, api_key_id: int, key: str, status: int, body: bytes
) -> None:
    """Stores the answer, unless another claimant took the key over meanwhile."""
    await pool.execute(
        "UPDATE idempotency_keys SET status = $4, body = $5"
        " WHERE api_key_id = $1 AND key = $2 AND claimed_by = $3 AND status IS NULL",
        api_key_id,
        key,
        claimant,
        status,
        body,
    )


async def abandon(pool: asyncpg.Pool, claimant: str, api_key_id: int, key: str) -> None:
    """A response that means "try again" after nothing was stored is not kept: the retry runs
    for real, with a value of its own (a purchase released as its payment could not be
    started must not be found again under the old one)."""
    await pool.execute(
        "DELETE FROM idempotency_keys"
        " WHERE api_key_id = $1 AND key = $2 AND claimed_by = $3 AND status IS NULL",
        api_key_id,
        key,
        claimant,
    )


async def release(pool: asyncpg.Pool, claimant: str, api_key_id: int, key: str) -> None:
    """A request that failed after it may have stored something (the database went away as it
    committed, an unexpected error) lets go of the key but keeps its `reserved` value: the
    retry takes the key over at once, decides with that value and so finds what was stored
    instead of making it a second time."""
    await pool.execute(
        "UPDATE idempotency_keys SET claimed_by = NULL"
        " WHERE api_key_id = $1 AND key = $2 AND claimed_by = $3 AND status IS NULL",
        api_key_id,
        key,
        claimant,
    )


async def purge(pool: asyncpg.Pool) -> int:
    result = await pool.execute(
        f"DELETE FROM idempotency_keys WHERE created_at < now() - interval '{KEPT}'"
    )
    await pool.execute(
        f"DELETE FROM idempotency_claimants WHERE alive_until < now() - interval '{KEPT}'"
    )
    return int(result.split()[-1])
