"""The rolling windows of rate limits and the auth-failure throttle that every gateway on the
database shares (infra/migrations/0015_rate_windows.sql): a claim of a window's room is one
function call, and windows whose last claim has ended are deleted."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Announced when a claim fills an auth-failure window: every gateway then refuses the address,
# not only the ones its failures reached.
AUTH_BLOCKS = "linjerum_auth_blocks"
PURGE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim got: `granted` calls (0: the window is full), the window's room left after
    it, and the seconds until it has room again (0 while it has)."""

    granted: int
    remaining: int
    wait: float


async def claim(
    pool: asyncpg.Pool,
    window_key: str,
    limit: int,
    asked: int,
    *,
    window: float,
    hold: float,
    announce: str | None = None,
) -> Claim:
    """Up to `asked` calls of the window's room; `asked=0` only looks. `announce`: the channel
    to notify when this claim fills the window."""
    row = await pool.fetchrow(
        "SELECT granted, remaining, wait FROM claim_rate_window($1, $2, $3, $4, $5, $6)",
        window_key,
        limit,
        asked,
        window,
        hold,
        announce,
    )
    assert row is not None
    return Claim(row["granted"], row["remaining"], row["wait"])


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
