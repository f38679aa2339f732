"""What is taken, per event seat, per ticket type and per attraction day: the read model that
availability polling and seat plans are answered from. It may lag the event store a little;
every purchase re-validates against the aggregate itself."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain import inventory
from domain.events import Event
from infra.eventstore import RecordedEvent


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
    assert isinstance(e, inventory.SeatsReleased)
    await conn.executemany(
        f"DELETE FROM {schema}.taken_seats WHERE event_id = $1 AND section_id = $2"
        " AND row = $3 AND seat_number = $4 AND purchase_token = $5",
        [(e.event_id, s.section_id, s.row, s.seat_number, e.purchase_token) for s in e.seats],
    )
    await _count(conn, schema, e.counts, -1)


async def _day(conn: asyncpg.Connection, schema: str, e: Event, sign: int) -> None:
    assert isinstance(e, inventory.AttractionTicketsHeld | inventory.AttractionTicketsReleased)
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
    "AttractionTicketsHeld": _tickets_held,
    "AttractionTicketsReleased": _tickets_released,
}
