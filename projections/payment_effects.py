"""Queues what the stored purchase events ask of Stripe, for the payments worker
(services/workers/payment_effects.py):
the refund a LatePaymentRefundDecided or a RefundDecided calls for, and the cancel of
the PaymentIntent of a purchase that expired or was cancelled unpaid, so its buyer can no
longer pay it. A projection, so the outbox row commits with the checkpoint (exactly once in
effect) and a replay finds its rows already queued (the outbox folds them).

Its table holds the intents that can still be paid: opened, not yet paid, expired or
cancelled."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import purchasing, streams
from infra.eventstore import RecordedEvent
from infra.payment_outbox import enqueue


class PaymentEffectsProjection:
    name: ClassVar[str] = "payment_effects"
    categories: ClassVar[tuple[str, ...]] = ("purchase",)
    tables_sql: ClassVar[str] = (
        "CREATE TABLE {schema}.payable_intents"
        " (purchase_token text PRIMARY KEY, intent_id text NOT NULL)"
    )

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        token = streams.purchase_token(event.stream_id)
        table = f"{schema}.payable_intents"
        if event.type == "PaymentIntentCreated":
            created = event.event()
            assert isinstance(created, purchasing.PaymentIntentCreated)
            await conn.execute(
                f"INSERT INTO {table} VALUES ($1, $2) ON CONFLICT DO NOTHING",
                token,
                created.intent_id,
            )
        elif event.type == "PurchasePaid":
            await conn.execute(f"DELETE FROM {table} WHERE purchase_token = $1", token)
        elif event.type in ("PurchaseExpired", "PurchaseCancelled"):
            intent_id = await conn.fetchval(
                f"DELETE FROM {table} WHERE purchase_token = $1 RETURNING intent_id", token
            )
            if intent_id is not None:
                await enqueue(conn, token, intent_id, "cancel_intent")
        elif event.type == "LatePaymentRefundDecided":
            decided = event.event()
            assert isinstance(decided, purchasing.LatePaymentRefundDecided)
            await enqueue(conn, token, decided.intent_id, "refund")
        elif event.type == "RefundDecided":
            refund = event.event()
            assert isinstance(refund, purchasing.RefundDecided)
            # A free purchase's tickets, or what Stripe had already given back: no money moves.
            if refund.intent_id is not None and refund.amount_cents > 0:
                await enqueue(conn, token, refund.intent_id, "ticket_refund", refund.refund_id)
