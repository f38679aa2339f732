"""Buyers' refund requests by organization, status and ticket: what the partner lists. Deciding
on a request (approve, decline) reads the request's own stream, never this table."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import refunds, streams
from infra.eventstore import RecordedEvent
from projections.framework import live_schema


class RefundRequestsProjection:
    name: ClassVar[str] = "refund_requests"
    categories: ClassVar[tuple[str, ...]] = (streams.REFUND_REQUEST,)
    tables_sql: ClassVar[str] = """
        CREATE TABLE {schema}.refund_requests (
            request_id text PRIMARY KEY, organization_id bigint NOT NULL,
            purchase_token text NOT NULL, ticket_id bigint NOT NULL, ticket_code text NOT NULL,
            status text NOT NULL, reason text, decline_reason text, refund_id text,
            requested_at timestamptz NOT NULL, decided_at timestamptz);
        CREATE INDEX ON {schema}.refund_requests (organization_id, requested_at);
    """

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        table = f"{schema}.refund_requests"
        e = event.event()
        match e:
            case refunds.RefundRequested():
                await conn.execute(
                    f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, 'pending', $6, NULL, NULL,"
                    " $7, NULL) ON CONFLICT DO NOTHING",
                    e.request_id,
                    e.organization_id,
                    e.purchase_token,
                    e.ticket_id,
                    e.ticket_code,
                    e.reason,
                    e.requested_at,
                )
            case refunds.RefundRequestApproved():
                await conn.execute(
                    f"UPDATE {table} SET status = 'approved', refund_id = $2, decided_at = $3"
                    " WHERE request_id = $1",
                    e.request_id,
                    e.refund_id,
                    e.decided_at,
                )
            case refunds.RefundRequestDeclined():
                await conn.execute(
                    f"UPDATE {table} SET status = 'declined', decline_reason = $2,"
                    " decided_at = $3 WHERE request_id = $1",
                    e.request_id,
                    e.reason,
                    e.decided_at,
                )


_LIVE = live_schema(RefundRequestsProjection())


async def listed(
    conn: asyncpg.Pool,
    organization_id: int,
    *,
    status: str | None,
    ticket: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The organization's requests, newest first; `ticket`: a ticket's code or id."""
    return await conn.fetch(
        f"SELECT * FROM {_LIVE}.refund_requests WHERE organization_id = $1"
        " AND ($2::text IS NULL OR status = $2)"
        " AND ($3::text IS NULL OR ticket_code = upper($3) OR ticket_id::text = $3)"
        " ORDER BY requested_at DESC, request_id LIMIT $4",
        organization_id,
        status,
        ticket,
        limit,
    )


async def statuses(conn: asyncpg.Pool, request_ids: list[str]) -> dict[str, str]:
    """The listed status of each of these requests (those not listed yet are absent)."""
    rows = await conn.fetch(
        f"SELECT request_id, status FROM {_LIVE}.refund_requests WHERE request_id = ANY($1)",
        request_ids,
    )
    return {r["request_id"]: r["status"] for r in rows}
