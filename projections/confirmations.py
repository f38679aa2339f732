"""Queues the confirmation e-mail of every paid purchase. It is a projection so it rides on
the framework's guarantee: the outbox row commits with the checkpoint, exactly once in effect,
and a replay finds the row already there (the outbox folds by purchase)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import asyncpg

from domain import streams
from infra.eventstore import RecordedEvent
from infra.mail_outbox import enqueue_confirmations


class ConfirmationsProjection:
    name: ClassVar[str] = "confirmations"
    categories: ClassVar[tuple[str, ...]] = ("purchase",)
    handles: ClassVar[frozenset[str]] = frozenset({"PurchasePaid"})
    tables_sql: ClassVar[str] = "CREATE TABLE {schema}.queued (purchase_token text PRIMARY KEY)"

    async def apply_all(
        self, conn: asyncpg.Connection, schema: str, events: Sequence[RecordedEvent]
    ) -> None:
        """The batch's paid purchases marked in one statement and their messages queued in
        another (the outbox folds a purchase's second confirmation into its first)."""
        tokens = [streams.purchase_token(e.stream_id) for e in events if e.type in self.handles]
        if not tokens:
            return
        await conn.execute(
            f"INSERT INTO {schema}.queued SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", tokens
        )
        await enqueue_confirmations(conn, tokens)
