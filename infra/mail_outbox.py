"""The mail outbox: a message to send is a row, queued in the same transaction as the fact
that calls for it, and folded by a dedupe key (one confirmation per purchase, resends at most
once a minute)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

CHANNEL = "mail_outbox"
# A transfer's e-mails, each sent once: the offer to its recipient, and their ticket once they
# accepted. For these the row's `purchase_token` is the transfer's id.
TRANSFER_KINDS = ("transfer_offer", "transfer_completed")

# One wake-up however many rows (the mailers read every row due).
_ENQUEUE = """
WITH inserted AS (
    INSERT INTO mail_outbox (purchase_token, kind, dedupe_key)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM inserted),
       (SELECT pg_notify('mail_outbox', '') WHERE EXISTS (SELECT FROM inserted))
"""


async def enqueue(
    pool_or_conn: asyncpg.Pool | asyncpg.Connection,
    purchase_token: str,
    kind: str,
    *,
    now: datetime | None = None,
    refund_id: str | None = None,
) -> bool:
    """Queue a message ('confirmation', 'resend', 'refund' or one of TRANSFER_KINDS) and wake
    the mailers; True if queued, False if folded into one already queued. On a connection
    inside a transaction, the row and the wake-up both take effect at commit. `now` picks the
    resend's minute (tests)."""
    key = _dedupe_key(purchase_token, kind, now or datetime.now(UTC), refund_id)
    return await pool_or_conn.fetchval(_ENQUEUE, [purchase_token], [kind], [key]) == 1


async def enqueue_confirmations(conn: asyncpg.Connection, purchase_tokens: list[str]) -> int:
    """Queue the confirmation of each purchase, in one statement (an on-sale's batch of paid
    purchases would otherwise cost a round trip each); returns how many were not queued yet."""
    now = datetime.now(UTC)
    keys = [_dedupe_key(token, "confirmation", now, None) for token in purchase_tokens]
    kinds = ["confirmation"] * len(purchase_tokens)
    return await conn.fetchval(_ENQUEUE, purchase_tokens, kinds, keys)


def _dedupe_key(purchase_token: str, kind: str, now: datetime, refund_id: str | None) -> str:
    if kind == "refund":
        # One per refund (`refund_id`); a purchase may have several.
        return f"refund:{refund_id}"
    if kind == "confirmation":
        return f"confirmation:{purchase_token}"
    if kind == "resend":
        return f"resend:{purchase_token}:{now.astimezone(UTC):%Y-%m-%dT%H:%M}"
    if kind in TRANSFER_KINDS:
        return f"{kind}:{purchase_token}"
    raise ValueError(f"unknown mail kind {kind!r}")
