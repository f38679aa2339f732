"""Queues the confirmation e-mail of every paid purchase. It is a projection so it rides on
the framework's guarantee: the outbox row commits with the checkpoint, exactly once in effect,
and a replay finds the row already there (the outbox folds by purchase)."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import streams
from infra.eventstore import RecordedEvent
from infra.mail_outbox import enqueue


class ConfirmationsProjection:
    name: ClassVar[str] = "confirmations"
    categories: ClassVar[tuple[str, ...]] = ("purchase",)
    tables_sql: ClassVar[str] = "CREATE TABLE {schema}.queued (purchase_token text PRIMARY KEY)"

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        if event.type != "PurchasePaid":
            return
        token = streams.purchase_token(event.stream_id)
        await conn.execute(f"INSERT INTO {schema}.queued VALUES ($1) ON CONFLICT DO NOTHING", token)
        await enqueue(conn, token, "confirmation")
