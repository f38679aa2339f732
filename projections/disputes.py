"""Disputed payments (chargebacks) by organization: what the partner lists to answer them. The
purchase's own stream holds each dispute too (PaymentDisputed)."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import purchasing, streams
from infra.eventstore import RecordedEvent
from projections.framework import live_schema


class DisputesProjection:
    name: ClassVar[str] = "disputes"
    categories: ClassVar[tuple[str, ...]] = (streams.PURCHASE,)
    handles: ClassVar[frozenset[str]] = frozenset({"PaymentDisputed"})
    tables_sql: ClassVar[str] = """
        CREATE TABLE {schema}.disputes (
            dispute_id text PRIMARY KEY, organization_id bigint NOT NULL,
            purchase_token text NOT NULL, intent_id text NOT NULL, amount_cents integer NOT NULL,
            currency text NOT NULL, reason text NOT NULL, status text NOT NULL,
            disputed_at timestamptz NOT NULL);
        CREATE INDEX ON {schema}.disputes (organization_id, disputed_at);
    """

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        if event.type not in self.handles:
            return
        e = event.event()
        assert isinstance(e, purchasing.PaymentDisputed)
        await conn.execute(
            f"INSERT INTO {schema}.disputes VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT DO NOTHING",
            e.dispute_id,
            e.organization_id,
            e.token,
            e.intent_id,
            e.amount_cents,
            e.currency,
            e.reason,
            e.status,
            event.recorded_at,
        )


_LIVE = live_schema(DisputesProjection())


async def listed(conn: asyncpg.Pool, organization_id: int, limit: int) -> list[asyncpg.Record]:
    """The organization's disputes, newest first."""
    return await conn.fetch(
        f"SELECT * FROM {_LIVE}.disputes WHERE organization_id = $1"
        " ORDER BY disputed_at DESC, dispute_id LIMIT $2",
        organization_id,
        limit,
    )
