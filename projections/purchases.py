"""Purchases by status and expiry: what the sweeper looks for, and what the activity of an
organization's sales looks like. The purchase itself is always read from its own stream."""

from __future__ import annotations

from collections.abc import Sequence
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

    async def apply_all(
        self, conn: asyncpg.Connection, schema: str, events: Sequence[RecordedEvent]
    ) -> None:
        """The batch's new purchases in one INSERT, then one UPDATE to each purchase's last
        status: a purchase's opening comes before its other events, and one status after
        another leaves the last one and the last `paid_at` given."""
        opened: list[tuple[object, ...]] = []
        ended: dict[str, tuple[str, datetime | None]] = {}
        for event in events:
            if event.type == "PurchaseOpened":
                e = event.event()
                assert isinstance(e, purchasing.PurchaseOpened)
                opened.append(
                    (
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
                )
            elif event.type in _STATUS:
                e = event.event()
                token = streams.purchase_token(event.stream_id)
                paid_at = e.paid_at if isinstance(e, purchasing.PurchasePaid) else None
                ended[token] = (_STATUS[event.type], paid_at or ended.get(token, ("", None))[1])
        if opened:
            await conn.execute(
                f"INSERT INTO {schema}.purchases (token, organization_id, event_id,"
                " attraction_id, total_cents, currency, buyer_email, access_code, opened_at,"
                " expires_at, status) SELECT *, 'pending_payment' FROM unnest($1::text[],"
                " $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::text[], $7::text[],"
                " $8::text[], $9::timestamptz[], $10::timestamptz[])",
                *[list(column) for column in zip(*opened, strict=True)],
            )
        if ended:
            await conn.execute(
                f"UPDATE {schema}.purchases p SET status = u.status,"
                " paid_at = coalesce(u.paid_at, p.paid_at)"
                " FROM unnest($1::text[], $2::text[], $3::timestamptz[]) u(token, status, paid_at)"
                " WHERE p.token = u.token",
                list(ended),
                [status for status, _ in ended.values()],
                [paid_at for _, paid_at in ended.values()],
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
