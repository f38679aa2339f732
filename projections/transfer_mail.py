"""Queues a transfer's e-mails: the offer (with the token to answer it) to the recipient once
TransferOffered is stored, and the recipient's ticket once TransferAccepted is. A projection,
as confirmations are (projections/confirmations.py): the outbox row commits with the
checkpoint, and a replay folds into the row already queued."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import streams
from infra.eventstore import RecordedEvent
from infra.mail_outbox import enqueue

_KIND = {"TransferOffered": "transfer_offer", "TransferAccepted": "transfer_completed"}


class TransferMailProjection:
    name: ClassVar[str] = "transfer_mail"
    categories: ClassVar[tuple[str, ...]] = (streams.TRANSFER,)
    tables_sql: ClassVar[str] = (
        "CREATE TABLE {schema}.queued"
        " (transfer_id text, kind text, PRIMARY KEY (transfer_id, kind))"
    )

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        kind = _KIND.get(event.type)
        if kind is None:
            return
        transfer_id = streams.transfer_id(event.stream_id)
        await conn.execute(
            f"INSERT INTO {schema}.queued VALUES ($1, $2) ON CONFLICT DO NOTHING", transfer_id, kind
        )
        await enqueue(conn, transfer_id, kind)
