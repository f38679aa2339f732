"""Ticket codes, attendee tokens and access codes to the streams that hold the truth: the index
verify, scan and buyer self-service look up before deciding on the ticket's own stream."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import purchasing, streams, tickets
from infra.eventstore import RecordedEvent


class TicketsProjection:
    name: ClassVar[str] = "tickets"
    categories: ClassVar[tuple[str, ...]] = ("purchase", "ticket")
    tables_sql: ClassVar[str] = """
        CREATE TABLE {schema}.tickets (
            ticket_id bigint PRIMARY KEY, code text NOT NULL UNIQUE,
            attendee_token text NOT NULL UNIQUE, purchase_token text NOT NULL,
            organization_id bigint NOT NULL, ticket_type_id bigint NOT NULL,
            status text NOT NULL, scan_count integer NOT NULL DEFAULT 0);
        CREATE INDEX ON {schema}.tickets (purchase_token);
    """

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        handler = _HANDLED.get(event.type)
        if handler is not None:
            await handler(conn, f"{schema}.tickets", event)


async def _opened(conn: asyncpg.Connection, table: str, event: RecordedEvent) -> None:
    e = event.event()
    assert isinstance(e, purchasing.PurchaseOpened)
    await conn.executemany(
        f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, 'pending_payment', 0)",
        [
            (t.id, t.code, t.attendee_token, e.token, e.organization_id, t.ticket_type_id)
            for t in e.tickets
        ],
    )


async def _ended(conn: asyncpg.Connection, table: str, event: RecordedEvent) -> None:
    status = "refunded" if event.type == "LatePaymentRefunded" else "cancelled"
    await conn.execute(
        f"UPDATE {table} SET status = $2 WHERE purchase_token = $1 AND status = 'pending_payment'",
        streams.purchase_token(event.stream_id),
        status,
    )


async def _issued(conn: asyncpg.Connection, table: str, event: RecordedEvent) -> None:
    e = event.event()
    assert isinstance(e, tickets.TicketIssued)
    await conn.execute(f"UPDATE {table} SET status = 'valid' WHERE ticket_id = $1", e.ticket_id)


async def _scanned(conn: asyncpg.Connection, table: str, event: RecordedEvent) -> None:
    e = event.event()
    assert isinstance(e, tickets.TicketScanned)
    await conn.execute(
        f"UPDATE {table} SET status = 'scanned', scan_count = scan_count + 1 WHERE ticket_id = $1",
        e.ticket_id,
    )


async def _transferred(conn: asyncpg.Connection, table: str, event: RecordedEvent) -> None:
    e = event.event()
    assert isinstance(e, tickets.TicketTransferred)
    await conn.execute(
        f"UPDATE {table} SET code = $2, attendee_token = $3 WHERE ticket_id = $1",
        e.ticket_id,
        e.new_code,
        e.new_attendee_token,
    )


async def _refunded(conn: asyncpg.Connection, table: str, event: RecordedEvent) -> None:
    e = event.event()
    assert isinstance(e, tickets.TicketRefunded)
    await conn.execute(f"UPDATE {table} SET status = 'refunded' WHERE ticket_id = $1", e.ticket_id)


_HANDLED = {
    "PurchaseOpened": _opened,
    "PurchaseCancelled": _ended,
    "PurchaseExpired": _ended,
    "LatePaymentRefunded": _ended,
    "TicketIssued": _issued,
    "TicketScanned": _scanned,
    "TicketRefunded": _refunded,
    "TicketTransferred": _transferred,
}
