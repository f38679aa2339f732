"""Queries against the catalog and availability read models, scoped to one organization: the
only way the read endpoints reach data, so no handler can forget the organization filter."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg
import msgspec

from domain.catalog import DiscountCodeCreated, Section, TicketType
from domain.inventory import SeatRef
from domain.seating import TakenSeats
from domain.stock import available_per_type
from projections.availability import AvailabilityProjection
from projections.catalog import CatalogProjection
from projections.framework import live_schema

CATALOG = live_schema(CatalogProjection())
STOCK = live_schema(AvailabilityProjection())

_sections = msgspec.json.Decoder(list[Section])

EVENT_COLUMNS = (
    "e.id, e.slug, e.name, e.description, e.event_date, e.event_end_date, e.doors_open,"
    " e.sales_start_date, e.sales_end_date, e.status, e.venue_id, o.currency,"
    " v.name AS venue_name, v.address, v.city, v.zip_code, v.sections::text AS sections"
)


async def organization(conn: asyncpg.Pool, organization_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT * FROM {CATALOG}.organizations WHERE id = $1", organization_id
    )


async def upcoming_events(
    conn: asyncpg.Pool, organization_id: int, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT e.*, v.name AS venue_name, v.city FROM {CATALOG}.events e"
        f" JOIN {CATALOG}.venues v ON v.id = e.venue_id"
        " WHERE e.organization_id = $1 AND e.status = 'published' AND e.event_date > now()"
        " ORDER BY e.event_date, e.id LIMIT $2",
        organization_id,
        limit,
    )


async def event(conn: asyncpg.Pool, organization_id: int, slug: str) -> asyncpg.Record | None:
    """A published or cancelled event of the organization; drafts are not visible."""
    return await conn.fetchrow(
        f"SELECT {EVENT_COLUMNS} FROM {CATALOG}.events e"
        f" JOIN {CATALOG}.organizations o ON o.id = e.organization_id"
        f" JOIN {CATALOG}.venues v ON v.id = e.venue_id"
        " WHERE e.organization_id = $1 AND e.slug = $2 AND e.status <> 'draft'",
        organization_id,
        slug,
    )


async def event_by_id(
    conn: asyncpg.Pool, organization_id: int, event_id: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {EVENT_COLUMNS} FROM {CATALOG}.events e"
        f" JOIN {CATALOG}.organizations o ON o.id = e.organization_id"
        f" JOIN {CATALOG}.venues v ON v.id = e.venue_id"
        " WHERE e.organization_id = $1 AND e.id = $2 AND e.status <> 'draft'",
        organization_id,
        event_id,
    )


def sections_of(row: asyncpg.Record) -> list[Section]:
    return _sections.decode(row["sections"])


def _ticket_type(row: asyncpg.Record) -> TicketType:
    return TicketType(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        price_cents=row["price_cents"],
        early_bird_price_cents=row["early_bird_price_cents"],
        early_bird_end_date=row["early_bird_end_date"],
        category=row["category"],
        max_per_purchase=row["max_per_purchase"],
        section_ids=list(row["section_ids"]),
        capacity=row["capacity"],
    )


async def ticket_types(
    conn: asyncpg.Pool, *, event_id: int | None = None, attraction_id: int | None = None
) -> list[TicketType]:
    column, owner = (
        ("event_id", event_id) if event_id is not None else ("attraction_id", attraction_id)
    )
    rows = await conn.fetch(
        f"SELECT * FROM {CATALOG}.ticket_types WHERE {column} = $1 ORDER BY display_order", owner
    )
    return [_ticket_type(r) for r in rows]


async def taken_seats(conn: asyncpg.Pool, event_id: int) -> list[SeatRef]:
    rows = await conn.fetch(
        f"SELECT section_id, row, seat_number FROM {STOCK}.taken_seats WHERE event_id = $1"
        " ORDER BY section_id, row, seat_number",
        event_id,
    )
    return [SeatRef(section_id=r[0], row=r[1], seat_number=r[2]) for r in rows]


async def taken_seat_set(conn: asyncpg.Pool, event_id: int) -> TakenSeats:
    """Grouped by row in the database: a row per venue row instead of one per taken seat (an
    on-sale reads this every time the read model moves)."""
    rows = await conn.fetch(
        f"SELECT section_id, row, array_agg(seat_number) FROM {STOCK}.taken_seats"
        " WHERE event_id = $1 GROUP BY section_id, row",
        event_id,
    )
    return TakenSeats({(r[0], r[1]): frozenset(r[2]) for r in rows})


async def taken_per_type(conn: asyncpg.Pool, type_ids: Sequence[int]) -> dict[int, int]:
    rows = await conn.fetch(
        f"SELECT ticket_type_id, taken FROM {STOCK}.taken_counts WHERE ticket_type_id = ANY($1)",
        list(type_ids),
    )
    return {r[0]: r[1] for r in rows}


async def event_stock(
    conn: asyncpg.Pool, event_id: int, sections: list[Section], types: list[TicketType]
) -> tuple[dict[int, int], list[SeatRef]]:
    """Per-type availability and the seats that are taken (held or sold)."""
    seats = await taken_seats(conn, event_id)
    per_section: dict[int, int] = {}
    for seat in seats:
        per_section[seat.section_id] = per_section.get(seat.section_id, 0) + 1
    counts = await taken_per_type(conn, [t.id for t in types])
    return available_per_type(sections, types, per_section, counts), seats


async def venues(conn: asyncpg.Pool, organization_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT * FROM {CATALOG}.venues WHERE organization_id = $1 ORDER BY id", organization_id
    )


async def venue(conn: asyncpg.Pool, organization_id: int, venue_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT * FROM {CATALOG}.venues WHERE organization_id = $1 AND id = $2",
        organization_id,
        venue_id,
    )


ATTRACTION_COLUMNS = (
    "a.*, a.opening_hours::text AS hours, o.currency, v.name AS venue_name, v.address,"
    " v.city, v.zip_code"
)


async def attractions(conn: asyncpg.Pool, organization_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {ATTRACTION_COLUMNS} FROM {CATALOG}.attractions a"
        f" JOIN {CATALOG}.organizations o ON o.id = a.organization_id"
        f" JOIN {CATALOG}.venues v ON v.id = a.venue_id"
        " WHERE a.organization_id = $1 ORDER BY a.id",
        organization_id,
    )


async def attraction(conn: asyncpg.Pool, organization_id: int, slug: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {ATTRACTION_COLUMNS} FROM {CATALOG}.attractions a"
        f" JOIN {CATALOG}.organizations o ON o.id = a.organization_id"
        f" JOIN {CATALOG}.venues v ON v.id = a.venue_id"
        " WHERE a.organization_id = $1 AND a.slug = $2",
        organization_id,
        slug,
    )


async def taken_on(conn: asyncpg.Pool, attraction_id: int, day: date) -> int:
    return (
        await conn.fetchval(
            f"SELECT taken FROM {STOCK}.attraction_days WHERE attraction_id = $1"
            " AND visit_date = $2",
            attraction_id,
            day,
        )
        or 0
    )


UNLIMITED = 9999


async def attraction_stock(
    conn: asyncpg.Pool, row: asyncpg.Record
) -> tuple[list[TicketType], dict[int, int]]:
    """Per-type availability of an attraction: a type's remaining capacity; a type without one
    is bounded only by the daily cap (shown as the cap, or UNLIMITED without one)."""
    types = await ticket_types(conn, attraction_id=row["id"])
    counts = await taken_per_type(conn, [t.id for t in types])
    fallback = row["daily_max_tickets"] or UNLIMITED
    return types, {
        t.id: fallback if t.capacity is None else max(0, t.capacity - counts.get(t.id, 0))
        for t in types
    }


async def discount_code(
    conn: asyncpg.Pool, organization_id: int, code: str
) -> tuple[DiscountCodeCreated, int] | None:
    """The organization's code (as stored: trimmed, upper case) with its uses so far, in the
    shape the pricing and the discount rules take."""
    row = await conn.fetchrow(
        f"SELECT * FROM {CATALOG}.discount_codes WHERE organization_id = $1 AND code = $2",
        organization_id,
        code,
    )
    if row is None:
        return None
    terms = DiscountCodeCreated(
        discount_id=row["id"],
        organization_id=row["organization_id"],
        code=row["code"],
        percentage=row["percentage"],
        amount_cents=row["amount_cents"],
        applies_to_all=row["applies_to_all"],
        ticket_type_ids=list(row["ticket_type_ids"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        max_uses=row["max_uses"],
    )
    return terms, row["current_uses"]
