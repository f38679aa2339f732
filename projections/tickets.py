"""Ticket codes, attendee tokens and access codes to the streams that hold the truth: the index
verify, scan and buyer self-service look up before deciding on the ticket's own stream."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
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

    async def apply_all(
        self, conn: asyncpg.Connection, schema: str, events: Sequence[RecordedEvent]
    ) -> None:
        """The batch's new tickets in one INSERT (a ticket's purchase opens before anything else
        happens to it), then the rest in runs of one event type, a statement per run."""
        table = f"{schema}.tickets"
        await _opened(conn, table, [e for e in events if e.type == "PurchaseOpened"])
        rest = [e for e in events if e.type in _HANDLED]
        for kind, run in itertools.groupby(rest, key=lambda e: e.type):
            await _HANDLED[kind](conn, table, list(run))


Run = list[RecordedEvent]


async def _opened(conn: asyncpg.Connection, table: str, run: Run) -> None:
    rows = []
    for event in run:
        e = event.event()
        assert isinstance(e, purchasing.PurchaseOpened)
        rows += [
            (t.id, t.code, t.attendee_token, e.token, e.organization_id, t.ticket_type_id)
            for t in e.tickets
        ]
    if rows:
        await conn.execute(
            f"INSERT INTO {table} SELECT *, 'pending_payment', 0 FROM unnest($1::bigint[],"
            " $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])",
            *[list(column) for column in zip(*rows, strict=True)],
        )


async def _ended(conn: asyncpg.Connection, table: str, run: Run) -> None:
    status = "refunded" if run[0].type == "LatePaymentRefunded" else "cancelled"
    await conn.execute(
        f"UPDATE {table} SET status = $2"
        " WHERE purchase_token = ANY($1::text[]) AND status = 'pending_payment'",
        [streams.purchase_token(e.stream_id) for e in run],
        status,
    )


def _ticket_ids(run: Run) -> list[int]:
    ids = []
    for event in run:
        e = event.event()
        assert isinstance(e, tickets.TicketIssued | tickets.TicketRefunded)
        ids.append(e.ticket_id)
    return ids


async def _issued(conn: asyncpg.Connection, table: str, run: Run) -> None:
    await conn.execute(
        f"UPDATE {table} SET status = 'valid' WHERE ticket_id = ANY($1::bigint[])",
        _ticket_ids(run),
    )


async def _scanned(conn: asyncpg.Connection, table: str, run: Run) -> None:
    scans: dict[int, int] = {}
    for event in run:
        e = event.event()
        assert isinstance(e, tickets.TicketScanned)
        scans[e.ticket_id] = scans.get(e.ticket_id, 0) + 1
    await conn.execute(
        f"UPDATE {table} t SET status = 'scanned', scan_count = t.scan_count + s.scans"
        " FROM unnest($1::bigint[], $2::int[]) s(ticket_id, scans) WHERE t.ticket_id = s.ticket_id",
        list(scans),
        list(scans.values()),
    )


async def _transferred(conn: asyncpg.Connection, table: str, run: Run) -> None:
    """A ticket transferred twice in a run takes its last code; codes are never reused."""
    latest: dict[int, tuple[str, str]] = {}
    for event in run:
        e = event.event()
        assert isinstance(e, tickets.TicketTransferred)
        latest[e.ticket_id] = (e.new_code, e.new_attendee_token)
    await conn.execute(
        f"UPDATE {table} t SET code = n.code, attendee_token = n.attendee_token"
        " FROM unnest($1::bigint[], $2::text[], $3::text[]) n(ticket_id, code, attendee_token)"
        " WHERE t.ticket_id = n.ticket_id",
        list(latest),
        [code for code, _ in latest.values()],
        [token for _, token in latest.values()],
    )


async def _refunded(conn: asyncpg.Connection, table: str, run: Run) -> None:
    await conn.execute(
        f"UPDATE {table} SET status = 'refunded' WHERE ticket_id = ANY($1::bigint[])",
        _ticket_ids(run),
    )


_HANDLED = {
    "PurchaseCancelled": _ended,
    "PurchaseExpired": _ended,
    "LatePaymentRefunded": _ended,
    "TicketIssued": _issued,
    "TicketScanned": _scanned,
    "TicketRefunded": _refunded,
    "TicketTransferred": _transferred,
}
