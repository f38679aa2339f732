"""Queues the buyer's e-mail of each refund of a paid purchase's tickets (RefundDecided, or a
refund Stripe reported) and of a late payment given back whole: a projection, as confirmations
are (projections/confirmations.py), so the outbox row commits with the checkpoint and a replay
folds into the row already queued."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import purchasing, streams
from infra.eventstore import RecordedEvent
from infra.mail_outbox import enqueue


class RefundMailProjection:
    name: ClassVar[str] = "refund_mail"
    categories: ClassVar[tuple[str, ...]] = (streams.PURCHASE,)
    handles: ClassVar[frozenset[str]] = frozenset(
        {"RefundDecided", "RefundReported", "LatePaymentRefundDecided", "LatePaymentRefunded"}
    )
    tables_sql: ClassVar[str] = (
        "CREATE TABLE {schema}.queued (refund_id text PRIMARY KEY, purchase_token text NOT NULL)"
    )

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        if event.type not in self.handles:
            return
        refund = event.event()
        token = streams.purchase_token(event.stream_id)
        if isinstance(refund, purchasing.RefundDecided | purchasing.RefundReported):
            refund_id = refund.refund_id
        else:
            # A late payment given back whole: decided (or, in older streams, made) once, one
            # e-mail, under the id the refunds list shows it by.
            refund_id = purchasing.late_payment_refund_id(token)
        await conn.execute(
            f"INSERT INTO {schema}.queued VALUES ($1, $2) ON CONFLICT DO NOTHING",
            refund_id,
            token,
        )
        await enqueue(conn, token, "refund", refund_id=refund_id)
