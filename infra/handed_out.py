"""Reads of what the service has handed out (ticket codes, attendee tokens, access codes): the
index the event store writes in the same transaction as the PurchaseOpened that hands them out
(infra/migrations/0009_handed_out.sql), or the TicketTransferred that gives a ticket a new code
and attendee token (0010_transfers.sql), so a code works the moment its purchase is
acknowledged, whatever the projectors, the relay or NATS are doing. The index only says which
streams to read; the streams say what the code is worth."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import asyncpg

from domain import streams
from infra.eventstore import joined_stream

MAX_CODE = 64
MAX_TOKEN = 80
MAX_ACCESS_CODE = 32

# Ticket codes' rows and their tickets' streams in one round trip: gates scan at the rate people
# walk. Rows: a code's columns on each event of its stream (event columns null before issue).
TICKETS_BY_CODES = (
    "SELECT c.ticket_id, c.code, c.purchase_token, c.organization_id, e.* FROM ticket_codes c "
    + joined_stream(f"'{streams.TICKET}-' || c.ticket_id")
    + " WHERE c.code = ANY($1::text[]) ORDER BY c.code, e.version"
)


@dataclass(frozen=True)
class TicketHandle:
    ticket_id: int
    purchase_token: str
    organization_id: int


@dataclass(frozen=True)
class OrderHandle:
    purchase_token: str
    buyer_email: str


def normalize_code(code: str) -> str:
    """Codes are printed in capitals; gates and buyers may type them otherwise."""
    return code.strip().upper()


async def ticket_by_code(
    conn: asyncpg.Pool | asyncpg.Connection, code: str
) -> list[asyncpg.Record]:
    """TICKETS_BY_CODES's rows for a code as typed: none for a code never handed out."""
    return (await tickets_by_codes(conn, [code])).get(code, [])


async def tickets_by_codes(
    conn: asyncpg.Pool | asyncpg.Connection, codes: Collection[str]
) -> dict[str, list[asyncpg.Record]]:
    """TICKETS_BY_CODES's rows of each code as typed, for many codes in one round trip (the
    scans of every gate at one moment); a code never handed out has no entry."""
    keys = {code: normalize_code(code)[:MAX_CODE] for code in codes}
    by_key: dict[str, list[asyncpg.Record]] = {}
    for row in await conn.fetch(TICKETS_BY_CODES, list(set(keys.values()))):
        by_key.setdefault(row["code"], []).append(row)
    return {code: by_key[key] for code, key in keys.items() if key in by_key}


async def ticket_handle_by_code(
    conn: asyncpg.Pool | asyncpg.Connection, code: str
) -> TicketHandle | None:
    """The ticket a code (current or former) was handed out for, without its stream."""
    row = await conn.fetchrow(
        "SELECT ticket_id, purchase_token, organization_id FROM ticket_codes WHERE code = $1",
        normalize_code(code)[:MAX_CODE],
    )
    return TicketHandle(*row) if row else None


async def ticket_by_attendee_token(
    conn: asyncpg.Pool | asyncpg.Connection, token: str
) -> TicketHandle | None:
    row = await conn.fetchrow(
        "SELECT ticket_id, purchase_token, organization_id FROM attendee_tokens WHERE token = $1",
        token[:MAX_TOKEN],
    )
    return TicketHandle(*row) if row else None


async def ticket_by_id(
    conn: asyncpg.Pool | asyncpg.Connection, ticket_id: int
) -> TicketHandle | None:
    """Where a ticket handed out under any code belongs, from its id alone."""
    row = await conn.fetchrow(
        "SELECT ticket_id, purchase_token, organization_id FROM ticket_codes"
        " WHERE ticket_id = $1 LIMIT 1",
        ticket_id,
    )
    return TicketHandle(*row) if row else None


async def orders_by_access_code(
    conn: asyncpg.Pool | asyncpg.Connection, access_code: str, organization_id: int
) -> list[OrderHandle]:
    """The organization's purchases with this access code (almost always one or none: the code
    is short, so two may share it), each with the buyer's e-mail as given."""
    rows = await conn.fetch(
        "SELECT purchase_token, buyer_email FROM access_codes"
        " WHERE organization_id = $1 AND access_code = $2",
        organization_id,
        normalize_code(access_code)[:MAX_ACCESS_CODE],
    )
    return [OrderHandle(*row) for row in rows]
