"""The rolling windows of rate limits and the auth-failure throttle that every gateway on the
database shares (infra/migrations/0015_rate_windows.sql, 0018): a claim of a window's room is
one function call, which also gives back what an earlier slice left unspent, and windows whose
last claim has ended are deleted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# Announced when a claim fills an auth-failure window: every gateway then refuses the address,
# not only the ones its failures reached.
AUTH_BLOCKS = "linjerum_auth_blocks"
PURGE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim got: `granted` calls (0: the window is full), the window's room left after
    it, the seconds until it has room again (0 while it has), and until when the window counts
    the calls granted (what to give back unspent ones by; None when nothing was granted)."""

    granted: int
    remaining: int
    wait: float
    counted_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Unspent:
    """Calls of a slice that were not spent before its hold ended, given back to the window
    with the next claim: `counted_until` is the slice's claim's."""

    counted_until: datetime
    calls: int


async def claim(
    pool: asyncpg.Pool,
    window_key: str,
    limit: int,
    asked: int,
    *,
    window: float,
    hold: float,
    announce: str | None = None,
    given_back: Sequence[Unspent] = (),
) -> Claim:
    """Up to `asked` calls of the window's room, after the `given_back` calls are taken off what
    it counts; `asked=0` only looks. `announce`: the channel to notify when this claim fills
    the window."""
    row = await pool.fetchrow(
        "SELECT granted, remaining, wait, counted_until"
        " FROM claim_given_back($1, $2, $3, $4, $5, $6, $7, $8)",
        window_key,
        limit,
        asked,
        window,
        hold,
        announce,
        [u.counted_until for u in given_back],
        [u.calls for u in given_back],
    )
    assert row is not None
    return Claim(row["granted"], row["remaining"], row["wait"], row["counted_until"])


async def purge(pool: asyncpg.Pool) -> int:
    """Delete the windows whose last claim has ended, in chunks; how many were deleted. The age
    is checked again on the row itself, so a window claimed meanwhile is kept."""
    deleted = 0
    while True:
        status = await pool.execute(
            "DELETE FROM rate_windows WHERE window_key IN ("
            " SELECT window_key FROM rate_windows WHERE counted_until < now() LIMIT $1)"
            " AND counted_until < now()",
            PURGE_CHUNK,
        )
        count = int(status.split()[-1])
        deleted += count
        if count < PURGE_CHUNK:
            return deleted
