"""The mail outbox: a message to send is a row, queued in the same transaction as the fact
that calls for it, and folded by a dedupe key (one confirmation per purchase, resends at most
once a minute)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

CHANNEL = "mail_outbox"

_ENQUEUE = """
WITH inserted AS (
    INSERT INTO mail_outbox (purchase_token, kind, dedupe_key) VALUES ($1, $2, $3)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('mail_outbox', '') FROM inserted
"""


async def enqueue(
    pool_or_conn: asyncpg.Pool | asyncpg.Connection,
    purchase_token: str,
    kind: str,
    *,
    now: datetime | None = None,
) -> bool:
    """Queue a message ('confirmation' or 'resend') and wake the mailers; True if queued, False
    if folded into one already queued. On a connection inside a transaction, the row and the
    wake-up both take effect at commit. `now` picks the resend's minute (tests)."""
    key = _dedupe_key(purchase_token, kind, now or datetime.now(UTC))
    return await pool_or_conn.fetchrow(_ENQUEUE, purchase_token, kind, key) is not None


def _dedupe_key(purchase_token: str, kind: str, now: datetime) -> str:
    if kind == "confirmation":
        return f"confirmation:{purchase_token}"
    if kind == "resend":
        return f"resend:{purchase_token}:{now.astimezone(UTC):%Y-%m-%dT%H:%M}"
    raise ValueError(f"unknown mail kind {kind!r}")
