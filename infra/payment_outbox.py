"""The payment outbox: what is to be asked of Stripe (a refund, the cancel of a PaymentIntent)
is a row, queued in the same transaction as the projection checkpoint of the stored event that
decided it, and folded by a dedupe key, so a replay or a redelivery queues nothing twice."""

from __future__ import annotations

from typing import Literal

import asyncpg

CHANNEL = "payment_outbox"

# `refund`: a late payment's, whole; `ticket_refund`: a RefundDecided's (by its refund id).
PaymentEffect = Literal["refund", "cancel_intent", "ticket_refund"]

_ENQUEUE = """
WITH inserted AS (
    INSERT INTO payment_outbox (purchase_token, intent_id, kind, dedupe_key, refund_id)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('payment_outbox', '') FROM inserted
"""


async def enqueue(
    conn: asyncpg.Connection | asyncpg.Pool,
    purchase_token: str,
    intent_id: str,
    kind: PaymentEffect,
    refund_id: str | None = None,
) -> bool:
    """Queue one effect and wake the workers; True if queued, False if already queued (a late
    payment is refunded once, a RefundDecided made once, an intent cancelled once). Inside a
    transaction, the row and the wake-up both take effect at its commit."""
    match kind:
        case "refund":
            key = f"refund:{purchase_token}"
        case "ticket_refund":
            key = f"ticket_refund:{refund_id}"
        case "cancel_intent":
            key = f"cancel_intent:{intent_id}"
    return (
        await conn.fetchrow(_ENQUEUE, purchase_token, intent_id, kind, key, refund_id) is not None
    )
