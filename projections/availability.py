"""What is taken, per event seat, per ticket type and per attraction day: the read model that
availability polling and seat plans are answered from. It may lag the event store a little;
every purchase re-validates against the aggregate itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import ClassVar

import asyncpg

from domain.catalog import TicketType
from domain.events import Event
from domain.inventory import events as inventory
from domain.inventory import stock
from domain.inventory.events import SeatRef
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

    async def apply_all(
        self, conn: asyncpg.Connection, schema: str, events: Sequence[RecordedEvent]
    ) -> None:
        """A batch in a few statements: the seats in runs of holds and of releases, in their
        order (a seat given back and held again in one batch), and every counter moved once
        by the batch's sum (a sum of zero still creates the row, as one event at a time would)."""
        moves = _Moves()
        for event in events:
            if event.type in _SEATS:
                moves.seats(event.event(), _SEATS[event.type])
            elif event.type in _DAYS:
                moves.day(event.event(), _DAYS[event.type])
        for sign, seats in moves.runs:
            if seats:
                await (_insert_seats if sign > 0 else _delete_seats)(conn, schema, seats)
        if moves.counts:
            await conn.execute(
                f"INSERT INTO {schema}.taken_counts SELECT * FROM unnest($1::bigint[], $2::int[])"
                " ON CONFLICT (ticket_type_id)"
                " DO UPDATE SET taken = taken_counts.taken + EXCLUDED.taken",
                list(moves.counts),
                list(moves.counts.values()),
            )
        if moves.days:
            await conn.execute(
                f"INSERT INTO {schema}.attraction_days"
                " SELECT * FROM unnest($1::bigint[], $2::date[], $3::int[])"
                " ON CONFLICT (attraction_id, visit_date)"
                " DO UPDATE SET taken = attraction_days.taken + EXCLUDED.taken",
                [a for a, _ in moves.days],
                [d for _, d in moves.days],
                list(moves.days.values()),
            )


SeatRow = tuple[int, int, str, int, int, str]
"""event, section, row, seat number, ticket type, purchase token"""


class _Moves:
    """What a batch does to the tables, gathered in order before anything is written."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, list[SeatRow]]] = []
        self.counts: dict[int, int] = {}
        self.days: dict[tuple[int, date], int] = {}

    def _count(self, counts: dict[int, int], sign: int) -> None:
        for type_id, n in sorted(counts.items()):
            self.counts[type_id] = self.counts.get(type_id, 0) + sign * n

    def seats(self, e: Event, sign: int) -> None:
        assert isinstance(
            e, inventory.SeatsHeld | inventory.SeatsReleased | inventory.SeatsReturned
        )
        if not self.runs or self.runs[-1][0] != sign:
            self.runs.append((sign, []))
        self.runs[-1][1].extend(
            (e.event_id, s.section_id, s.row, s.seat_number, s.ticket_type_id, e.purchase_token)
            for s in e.seats
        )
        self._count(e.counts, sign)

    def day(self, e: Event, sign: int) -> None:
        assert isinstance(
            e,
            inventory.AttractionTicketsHeld
            | inventory.AttractionTicketsReleased
            | inventory.AttractionTicketsReturned,
        )
        self._count(e.counts, sign)
        if e.visit_date is not None:
            key = (e.attraction_id, e.visit_date)
            self.days[key] = self.days.get(key, 0) + sign * sum(e.counts.values())


def _columns(seats: list[SeatRow]) -> list[list[object]]:
    return [list(column) for column in zip(*seats, strict=True)]


async def _insert_seats(conn: asyncpg.Connection, schema: str, seats: list[SeatRow]) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.taken_seats SELECT * FROM unnest($1::bigint[], $2::bigint[],"
        " $3::text[], $4::int[], $5::bigint[], $6::text[])",
        *_columns(seats),
    )


async def _delete_seats(conn: asyncpg.Connection, schema: str, seats: list[SeatRow]) -> None:
    await conn.execute(
        f"DELETE FROM {schema}.taken_seats t USING unnest($1::bigint[], $2::bigint[],"
        " $3::text[], $4::int[], $5::bigint[], $6::text[])"
        " AS r(event_id, section_id, row, seat_number, ticket_type_id, purchase_token)"
        " WHERE t.event_id = r.event_id AND t.section_id = r.section_id AND t.row = r.row"
        " AND t.seat_number = r.seat_number AND t.purchase_token = r.purchase_token",
        *_columns(seats),
    )


_SEATS = {
    "SeatsHeld": 1,
    "SeatsReleased": -1,
    # A refund's part of a hold: the same rows go, the rest of the hold stays.
    "SeatsReturned": -1,
}
_DAYS = {
    "AttractionTicketsHeld": 1,
    "AttractionTicketsReleased": -1,
    "AttractionTicketsReturned": -1,
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


async def attraction_stock(
    conn: asyncpg.Pool, row: asyncpg.Record, taken: Mapping[int, int] | None = None
) -> tuple[list[TicketType], dict[int, int]]:
    """Per-type availability of an attraction (`row`, as catalog.attraction reads it), by
    `stock.attraction_left`; `taken`: the places taken per type where they are known better
    than this read model knows them (the sales desk's)."""
    types = await catalog.ticket_types(conn, attraction_id=row["id"])
    return types, await attraction_left(conn, types, row["daily_max_tickets"], taken)


async def attraction_left(
    conn: asyncpg.Pool,
    types: Sequence[TicketType],
    daily_max: int | None,
    taken: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """`attraction_stock` of the attraction's ticket types and daily cap; the places taken are
    `taken` where given (the sales desk's), else this read model's."""
    if taken is None:
        taken = await taken_per_type(conn, [t.id for t in types])
    return stock.attraction_left(types, taken, daily_max)
