"""Queues what the stored purchase events ask of Stripe, for the payments worker
(services/workers/payment_effects.py):
the refund a LatePaymentRefundDecided or a RefundDecided calls for, and the cancel of
the PaymentIntent of a purchase that expired or was cancelled unpaid, so its buyer can no
longer pay it. A projection, so the outbox row commits with the checkpoint (exactly once in
effect) and a replay finds its rows already queued (the outbox folds them).

Its table holds the intents that can still be paid: opened, not yet paid, expired or
cancelled."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
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

    @property
    def handles(self) -> frozenset[str]:
        return _HANDLES

    async def apply_all(
        self, conn: asyncpg.Connection, schema: str, events: Sequence[RecordedEvent]
    ) -> None:
        """In runs of one event type, in order: the intents an on-sale creates and its payments
        take a statement per run; the rarer events, which queue work, one at a time."""
        table = f"{schema}.payable_intents"
        handled = [e for e in events if e.type in _HANDLES]
        for kind, run in itertools.groupby(handled, key=lambda e: e.type):
            if kind in _RUNS:
                await _RUNS[kind](conn, table, list(run))
            else:
                for event in run:
                    await _one(conn, table, event)


async def _created(conn: asyncpg.Connection, table: str, run: list[RecordedEvent]) -> None:
    intents = []
    for event in run:
        created = event.event()
        assert isinstance(created, purchasing.PaymentIntentCreated)
        intents.append((streams.purchase_token(event.stream_id), created.intent_id))
    await conn.execute(
        f"INSERT INTO {table} SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        [token for token, _ in intents],
        [intent for _, intent in intents],
    )


async def _paid(conn: asyncpg.Connection, table: str, run: list[RecordedEvent]) -> None:
    await conn.execute(
        f"DELETE FROM {table} WHERE purchase_token = ANY($1::text[])",
        [streams.purchase_token(e.stream_id) for e in run],
    )


async def _one(conn: asyncpg.Connection, table: str, event: RecordedEvent) -> None:
    token = streams.purchase_token(event.stream_id)
    if event.type in ("PurchaseExpired", "PurchaseCancelled"):
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


_RUNS = {"PaymentIntentCreated": _created, "PurchasePaid": _paid}
_ONE_BY_ONE = ("PurchaseExpired", "PurchaseCancelled", "LatePaymentRefundDecided", "RefundDecided")
_HANDLES = frozenset(_RUNS) | frozenset(_ONE_BY_ONE)
