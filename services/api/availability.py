"""Cheap polling endpoints: what is left of an event or an attraction day, and the seat plan
with the seats already taken. Served from the availability read model with an ETag."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from domain.catalog import TicketType
from domain.inventory import attraction_days
from domain.inventory.attraction_days import local_date, visit_day
from domain.inventory.stock import VisitDay, attraction_day, available_per_type, event_status
from domain.purchasing import visitable
from domain.seating import TakenSeats
from domain.venues import Section
from projections import availability, catalog
from services.api import schemas as s
from services.api.context import PURCHASES, now, organization_of, pool_of
from services.api.errors import invalid_request, not_found
from services.api.http import (
    Snapshot,
    parse_query,
    path_int,
    shared_answer,
    snapshot,
)
from services.api.routes import Handler, Route
from services.api.seating import (
    DESK_IN_STEP_SECONDS,
    EventSeats,
    as_sold_here,
    seat_refs,
    taken_now,
)


async def event_availability(request: web.Request, event: EventSeats) -> Snapshot:
    """The listing, seat map and taken seats are the ones auto-select reads (kept until the
    catalog or the availability read model moves): a snapshot rebuilt during an on-sale costs
    one read, of the per-type counts, instead of four."""
    available = await available_of(request, event)
    listing = event.listing
    status = event_status(
        listing["status"],
        listing["sales_start_date"],
        listing["sales_end_date"],
        listing["event_date"],
        available.values(),
        now(),
    )
    return snapshot(
        s.EventAvailability(
            event_id=event.id,
            status=status,
            ticket_types={str(tid): n for tid, n in available.items()},
            sold_seats=seat_refs(event.taken),
        ),
    )


async def available_of(request: web.Request, event: EventSeats) -> dict[int, int]:
    """What is left of each ticket type, by id in the ticket types' order."""
    types = list(event.ticket_types.values())
    return await left_per_type(request, event.id, event.sections, types, event.taken)


async def left_per_type(
    request: web.Request,
    event_id: int,
    sections: list[Section],
    types: list[TicketType],
    taken: TakenSeats,
) -> dict[int, int]:
    """What is left of each of an event's ticket types, given its seats taken: counted as the
    sales desk selling here has stored them (a release a moment ago counts free, as a hold
    counts taken), else as the read model has them."""
    counts = await availability.taken_per_type(pool_of(request), [t.id for t in types])
    here = await request.app[PURCHASES].seats.counted_now(event_id, counts)
    if here is not None:
        counts = {t.id: here.get(t.id, 0) for t in types}
    per_section: Counter[int] = Counter(section_id for section_id, _, _ in taken)
    return available_per_type(sections, types, per_section, counts)


def seat_plan_sections(sections: list[Section]) -> list[s.SeatPlanSection]:
    """The venue's sections as the seat plan shows them (the embedded planner's too)."""
    return [
        s.SeatPlanSection(
            id=x.id,
            name=x.name,
            display_order=x.display_order,
            seating_mode=x.seating_mode,
            section_type=x.section_type,
            color=x.color,
            position_x=x.position_x,
            position_y=x.position_y,
            rotation=x.rotation,
            width=x.width,
            height=x.height,
            inner_radius=x.inner_radius,
            outer_radius=x.outer_radius,
            start_angle=x.start_angle,
            end_angle=x.end_angle,
            capacity=x.seated_capacity or x.standing_capacity,
            rows=x.rows,
        )
        for x in sorted(sections, key=lambda x: (x.display_order, x.id))
    ]


def plan_as_sold_here(
    build: Callable[[web.Request, asyncpg.Record, TakenSeats], Awaitable[Snapshot]],
) -> Handler:
    """A venue's seat plan for an event (`?event_id=`), answered as `memoized` answers at the
    version of the event's stream its sold seats are read at (`taken_now`)."""

    @functools.wraps(build)
    async def handler(request: web.Request) -> web.Response:
        venue_id = path_int(request, "id")
        query = parse_query(request, s.SeatPlanQuery)
        row = await catalog.event_by_id(pool_of(request), organization_of(request), query.event_id)
        if row is None or row["venue_id"] != venue_id:
            raise not_found("venue or event")
        sold, version = await taken_now(request, row["id"])
        return await shared_answer(
            request, build.__name__, lambda: build(request, row, sold), version
        )

    return handler


async def seat_plan(request: web.Request, row: asyncpg.Record, sold: TakenSeats) -> Snapshot:
    types = await catalog.ticket_types(pool_of(request), event_id=row["id"])
    return snapshot(
        s.SeatPlan(
            venue_id=row["venue_id"],
            event_id=row["id"],
            sections=seat_plan_sections(catalog.sections_of(row)),
            sold_seats=seat_refs(sold),
            ticket_type_section_map={str(t.id): t.section_ids for t in types},
        ),
    )


AttractionBuild = Callable[
    [web.Request, asyncpg.Record, attraction_days.AttractionInventory | None], Awaitable[Snapshot]
]


def attraction_as_sold_here(
    build: AttractionBuild, check: Callable[[web.Request], object] | None = None
) -> Handler:
    """A read of an attraction answered as `memoized` answers, with the places taken as this
    gateway's sales desk stored them where it sells the attraction (`state`; None elsewhere):
    a ticket bought or given back a moment ago counts at once, not once the read model has it.
    `check`: what refuses the request whatever the attraction (its query)."""

    @functools.wraps(build)
    async def handler(request: web.Request) -> web.Response:
        if check is not None:
            check(request)
        pool = pool_of(request)
        row = await catalog.attraction(pool, organization_of(request), request.match_info["slug"])
        if row is None:
            raise not_found("attraction")
        stored = await request.app[PURCHASES].seats.attraction_now(row["id"], DESK_IN_STEP_SECONDS)
        state, version = stored if stored is not None else (None, None)
        return await shared_answer(
            request, build.__name__, lambda: build(request, row, state), version
        )

    return handler


def _visit_query(request: web.Request) -> s.AttractionAvailabilityQuery:
    query = parse_query(request, s.AttractionAvailabilityQuery)
    if query.date is not None and not visitable(query.date):
        raise invalid_request("date", "out of range")  # as a purchase for it is refused
    return query


async def attraction_availability(
    request: web.Request, row: asyncpg.Record, state: attraction_days.AttractionInventory | None
) -> Snapshot:
    """With a date, what can be bought for that day: nothing on a day the purchase would
    refuse (past in the organization's zone, or closed), and no type more than the day has
    left; the same rules `hold_attraction_tickets` decides by."""
    pool = pool_of(request)
    query = _visit_query(request)
    _, left = await availability.attraction_stock(
        pool, row, None if state is None else state.taken_per_type
    )
    cap = row["daily_max_tickets"]
    day: VisitDay | None = None
    taken = 0
    if query.date is not None:
        kept = request.app[PURCHASES].catalog
        opened = await kept.attraction(row["id"])
        zone = (await kept.organization(organization_of(request))).timezone
        day = visit_day(opened, query.date, local_date(now(), zone))
        if day == "open" and cap is not None:
            taken = (
                await availability.taken_on(pool, row["id"], query.date)
                if state is None
                else state.taken_per_day[query.date]
            )
    status, shown, remaining = attraction_day(left, cap, day, taken)
    return snapshot(
        s.AttractionAvailability.of_day(row["id"], status, shown, cap, query.date, remaining),
    )


ROUTES = [
    Route(
        "GET",
        "/api/v1/events/{slug}/availability",
        as_sold_here(event_availability),
        "Availability snapshot for polling",
        "Events",
        s.EventAvailability,
        errors=(401, 404, 429),
        path_params={"slug": str},
    ),
    Route(
        "GET",
        "/api/v1/venues/{id}/seat-plan",
        plan_as_sold_here(seat_plan),
        "Seat plan with the seats taken for an event",
        "Seat plans",
        s.SeatPlan,
        query=s.SeatPlanQuery,
        errors=(401, 404, 422, 429),
        path_params={"id": int},
    ),
    Route(
        "GET",
        "/api/v1/attractions/{slug}/availability",
        attraction_as_sold_here(attraction_availability, _visit_query),
        "Attraction availability, optionally for one visit date",
        "Attractions",
        s.AttractionAvailability,
        query=s.AttractionAvailabilityQuery,
        errors=(401, 404, 422, 429),
        path_params={"slug": str},
    ),
]
