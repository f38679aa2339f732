"""What is taken, per event seat, per ticket type and per attraction day: the read model that
availability polling and seat plans are answered from. It may lag the event store a little;
every purchase re-validates against the aggregate itself."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import ClassVar

import asyncpg

from domain.catalog import Section, TicketType
from domain.events import Event
from domain.inventory import events as inventory
from domain.inventory.events import SeatRef
from domain.inventory.stock import available_per_type
from domain.seating import TakenSeats
from infra.eventstore import RecordedEvent
from projections import catalog
from projections.framework import live_schema


class AvailabilityProjection:
    name: ClassVar[str] = "availability"
    categories: ClassVar[tuple[str, ...]] = ("event", "attraction")
    tables_sql: ClassVar[str] = """
        CREATE TABLE {schema}.taken_seats (
            event_id bigint NOT NULL, section_id bigint NOT NULL, row text NOT NULL,
            seat_number integer NOT NULL, ticket_type_id bigint NOT NULL,
            purchase_token text NOT NULL,
            PRIMARY KEY (event_id, section_id, row, seat_number));
        CREATE TABLE {schema}.taken_counts (
            ticket_type_id bigint PRIMARY KEY, taken integer NOT NULL);
        CREATE TABLE {schema}.attraction_days (
            attraction_id bigint NOT NULL, visit_date date NOT NULL, taken integer NOT NULL,
            PRIMARY KEY (attraction_id, visit_date));
    """

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        if event.type in _HANDLED:
            await _HANDLED[event.type](conn, schema, event.event())


async def _count(conn: asyncpg.Connection, schema: str, counts: dict[int, int], sign: int) -> None:
    await conn.executemany(
        f"INSERT INTO {schema}.taken_counts VALUES ($1, $2) ON CONFLICT (ticket_type_id)"
        " DO UPDATE SET taken = taken_counts.taken + EXCLUDED.taken",
        [(tid, sign * n) for tid, n in sorted(counts.items())],
    )


async def _seats_held(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, inventory.SeatsHeld)
    await conn.executemany(
        f"INSERT INTO {schema}.taken_seats VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (e.event_id, s.section_id, s.row, s.seat_number, s.ticket_type_id, e.purchase_token)
            for s in e.seats
        ],
    )
    await _count(conn, schema, e.counts, 1)


async def _seats_released(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, inventory.SeatsReleased | inventory.SeatsReturned)
    await conn.executemany(
        f"DELETE FROM {schema}.taken_seats WHERE event_id = $1 AND section_id = $2"
        " AND row = $3 AND seat_number = $4 AND purchase_token = $5",
        [(e.event_id, s.section_id, s.row, s.seat_number, e.purchase_token) for s in e.seats],
    )
    await _count(conn, schema, e.counts, -1)


async def _day(conn: asyncpg.Connection, schema: str, e: Event, sign: int) -> None:
    assert isinstance(
        e,
        inventory.AttractionTicketsHeld
        | inventory.AttractionTicketsReleased
        | inventory.AttractionTicketsReturned,
    )
    await _count(conn, schema, e.counts, sign)
    if e.visit_date is not None:
        await conn.execute(
            f"INSERT INTO {schema}.attraction_days VALUES ($1, $2, $3)"
            " ON CONFLICT (attraction_id, visit_date)"
            " DO UPDATE SET taken = attraction_days.taken + EXCLUDED.taken",
            e.attraction_id,
            e.visit_date,
            sign * sum(e.counts.values()),
        )


async def _tickets_held(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    await _day(conn, schema, e, 1)


async def _tickets_released(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    await _day(conn, schema, e, -1)


_HANDLED = {
    "SeatsHeld": _seats_held,
    "SeatsReleased": _seats_released,
    # A refund's part of a hold: the same rows go, the rest of the hold stays.
    "SeatsReturned": _seats_released,
    "AttractionTicketsHeld": _tickets_held,
    "AttractionTicketsReleased": _tickets_released,
    "AttractionTicketsReturned": _tickets_released,
}


_LIVE = live_schema(AvailabilityProjection())


async def taken_seats(conn: asyncpg.Pool, event_id: int) -> list[SeatRef]:
    rows = await conn.fetch(
        f"SELECT section_id, row, seat_number FROM {_LIVE}.taken_seats WHERE event_id = $1"
        " ORDER BY section_id, row, seat_number",
        event_id,
    )
    return [SeatRef(section_id=r[0], row=r[1], seat_number=r[2]) for r in rows]


async def taken_seat_set(conn: asyncpg.Pool, event_id: int) -> TakenSeats:
    """Grouped by row in the database: a row per venue row instead of one per taken seat (an
    on-sale reads this every time the read model moves)."""
    rows = await conn.fetch(
        f"SELECT section_id, row, array_agg(seat_number) FROM {_LIVE}.taken_seats"
        " WHERE event_id = $1 GROUP BY section_id, row",
        event_id,
    )
    return TakenSeats({(r[0], r[1]): frozenset(r[2]) for r in rows})


async def taken_per_type(conn: asyncpg.Pool, type_ids: Sequence[int]) -> dict[int, int]:
    rows = await conn.fetch(
        f"SELECT ticket_type_id, taken FROM {_LIVE}.taken_counts WHERE ticket_type_id = ANY($1)",
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


async def taken_on(conn: asyncpg.Pool, attraction_id: int, day: date) -> int:
    return (
        await conn.fetchval(
            f"SELECT taken FROM {_LIVE}.attraction_days WHERE attraction_id = $1"
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
    """Per-type availability of an attraction (`row`, as catalog.attraction reads it): a type's
    remaining capacity; a type without one is bounded only by the daily cap (shown as the cap,
    or UNLIMITED without one)."""
    types = await catalog.ticket_types(conn, attraction_id=row["id"])
    counts = await taken_per_type(conn, [t.id for t in types])
    fallback = row["daily_max_tickets"] or UNLIMITED
    return types, {
        t.id: fallback if t.capacity is None else max(0, t.capacity - counts.get(t.id, 0))
        for t in types
    }
