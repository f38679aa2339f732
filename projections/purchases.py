"""Purchases by status and expiry: what the sweeper looks for, and what the activity of an
organization's sales looks like. The purchase itself is always read from its own stream."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import asyncpg

from domain import purchasing, streams
from infra.eventstore import RecordedEvent
from projections.framework import live_schema

_STATUS = {
    "PurchasePaid": "paid",
    "PurchaseCancelled": "cancelled",
    "PurchaseExpired": "expired",
}


class PurchasesProjection:
    name: ClassVar[str] = "purchases"
    categories: ClassVar[tuple[str, ...]] = ("purchase",)
    tables_sql: ClassVar[str] = """
        CREATE TABLE {schema}.purchases (
            token text PRIMARY KEY, organization_id bigint NOT NULL, event_id bigint,
            attraction_id bigint, status text NOT NULL, total_cents integer NOT NULL,
            currency text NOT NULL, buyer_email text NOT NULL, access_code text NOT NULL,
            opened_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,
            paid_at timestamptz);
        CREATE INDEX ON {schema}.purchases (expires_at) WHERE status = 'pending_payment';
        CREATE INDEX ON {schema}.purchases (access_code);
    """

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        if event.type == "PurchaseOpened":
            e = event.event()
            assert isinstance(e, purchasing.PurchaseOpened)
            await conn.execute(
                f"INSERT INTO {schema}.purchases VALUES"
                " ($1, $2, $3, $4, 'pending_payment', $5, $6, $7, $8, $9, $10, NULL)",
                e.token,
                e.organization_id,
                e.event_id,
                e.attraction_id,
                e.pricing.total_cents,
                e.pricing.currency,
                e.buyer.email.lower(),
                e.access_code,
                e.opened_at,
                e.expires_at,
            )
        elif event.type in _STATUS:
            e = event.event()
            paid_at = e.paid_at if isinstance(e, purchasing.PurchasePaid) else None
            await conn.execute(
                f"UPDATE {schema}.purchases SET status = $2, paid_at = coalesce($3, paid_at)"
                " WHERE token = $1",
                streams.purchase_token(event.stream_id),
                _STATUS[event.type],
                paid_at,
            )


_LIVE = live_schema(PurchasesProjection())


async def due_for_expiry(conn: asyncpg.Pool, now: datetime, limit: int) -> list[str]:
    """The tokens of unpaid purchases whose hold has run out by `now`, the longest due first."""
    rows = await conn.fetch(
        f"SELECT token FROM {_LIVE}.purchases WHERE status = 'pending_payment'"
        " AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        now,
        limit,
    )
    return [r["token"] for r in rows]
