"""The seat planner's helpers: pick the best free seats for a ticket type, and check a selection
before a purchase. Both read the taken seats from the availability read model, so they lock
nothing and may lag a moment; POST /purchases decides again against the event's own stream.
Best-available also passes over the seats this process's sales desk knows the stream holds
(read again when it has not been in step for a second), so a lagging read model (a projector or
NATS outage) does not make it offer the same sold seats to buyer after buyer.

The event's seat map and taken seats are kept in memory until the read models change: in an
on-sale every buyer asks, and reading a few thousand taken seats per request would cost more
than all the rest."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from domain import seat_selection, seating
from domain.catalog import TicketType
from domain.errors import InvalidCommand
from domain.inventory.events import SeatRef
from domain.seating import TakenSeats
from domain.venues import Section
from projections import availability, catalog
from services.api.context import OFFERS, PLANS, PURCHASES, TAKEN, organization_of, pool_of
from services.api.errors import from_domain, invalid_request, not_found
from services.api.http import CANONICAL_ID, Snapshot, json_response, parse_body, shared_answer
from services.api.routes import Handler, Route
from services.api.schemas import Request

MAX_NEAR = 100  # a buyer's selection is a purchase or two; this bounds the scoring work
# No limit in the spec ("as many as could be found"): a group's or a block's seats, bounded so
# that one call cannot make the gateway score a stadium.
MAX_AUTO_SELECT = 1000
DESK_IN_STEP_SECONDS = 1.0  # how old the desk's view of the stream may be for a suggestion


class AutoSelectRequest(Request):
    ticket_type_id: int
    count: Annotated[int, Meta(ge=1, le=MAX_AUTO_SELECT)]
    near: Annotated[list[SeatRef], Meta(max_length=MAX_NEAR)] = msgspec.field(default_factory=list)


class AutoSelection(msgspec.Struct, frozen=True, kw_only=True):
    seats: list[SeatRef]
    count: int
    requested: int


class SeatValidationRequest(Request):
    selected_seats: Annotated[
        dict[str, list[SeatRef]], Meta(description="Seats by ticket type id (as a string)")
    ]


class SeatValidation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Either `available: true` alone, or `false` with the seats taken or selected twice."""

    available: bool
    conflicts: list[SeatRef] = []


@dataclass(frozen=True)
class _Plan:
    """The event's listing (its catalog row), seat map and ticket types."""

    listing: asyncpg.Record
    id: int
    sections: list[Section]
    ticket_types: dict[int, TicketType]


@dataclass(frozen=True)
class EventSeats(_Plan):
    """What the seat helpers and the availability snapshot need of the event: its plan and
    the seats taken."""

    taken: seating.TakenSeats


async def event_seats(request: web.Request) -> EventSeats:
    """The caller's published (or cancelled) event; 404 for a draft or another's event. The
    listing, seat map and ticket types are kept until the catalog changes, the taken seats
    until the availability read model does: in an on-sale only the latter moves, many times a
    second, and every auto-select and availability poll shares one read of them per move."""
    organization_id = organization_of(request)
    slug = request.match_info["slug"]
    pool = pool_of(request)
    plan = await request.app[PLANS].get(
        (organization_id, slug), lambda: _load_plan(pool, organization_id, slug)
    )
    taken = await _shown_taken(request, plan.id)
    return EventSeats(plan.listing, plan.id, plan.sections, plan.ticket_types, taken)


async def _shown_taken(request: web.Request, event_id: int) -> seating.TakenSeats:
    """The availability read model's taken seats of the event, kept until it moves."""
    pool = pool_of(request)
    return await request.app[TAKEN].get(
        event_id, lambda: availability.taken_seat_set(pool, event_id)
    )


async def taken_now(request: web.Request, event_id: int) -> tuple[seating.TakenSeats, int | None]:
    """The event's taken seats as `event_seats_now` has them (a seat bought or given back a
    moment ago shows as such on the gateway that sold it), with the desk's version (None where
    no desk here sells it)."""
    shown = await _shown_taken(request, event_id)
    selling = await request.app[PURCHASES].seats.selling_now(event_id, shown, DESK_IN_STEP_SECONDS)
    if selling is None:
        return shown, None
    return selling.taken, selling.version


def seat_refs(taken: seating.TakenSeats) -> list[SeatRef]:
    """In the order of section, row and number, as the read model lists them."""
    return [
        SeatRef(section_id=section_id, row=row, seat_number=number)
        for section_id, row, number in sorted(taken)
    ]


async def event_seats_now(request: web.Request) -> tuple[EventSeats, int | None]:
    """`event_seats` with what this gateway's sales desk for the event stored since the read
    model last moved, and the desk's version of the stream (None where no desk sells it)."""
    event = await event_seats(request)
    selling = await request.app[PURCHASES].seats.selling_now(
        event.id, event.taken, DESK_IN_STEP_SECONDS
    )
    if selling is None:
        return event, None
    now = replace(event, taken=selling.taken)
    return now, selling.version


def as_sold_here(build: Callable[[web.Request, EventSeats], Awaitable[Snapshot]]) -> Handler:
    """A read of an event's availability answered as `memoized` answers, from the seats taken
    as of the last hold this gateway stored: buyers polling the gateway that sells see a seat
    taken, and the event sold out, the moment the hold is stored, not once the read model has
    caught up (in an on-sale, a hundred milliseconds or more behind)."""

    @functools.wraps(build)
    async def handler(request: web.Request) -> web.Response:
        event, version = await event_seats_now(request)
        return await shared_answer(request, build.__name__, lambda: build(request, event), version)

    return handler


async def _load_plan(pool: asyncpg.Pool, organization_id: int, slug: str) -> _Plan:
    row = await catalog.event(pool, organization_id, slug)
    if row is None:
        raise not_found("event")
    types = await catalog.ticket_types(pool, event_id=row["id"])
    return _Plan(row, row["id"], catalog.sections_of(row), {t.id: t for t in types})


def _seated_type(event: EventSeats, ticket_type_id: int) -> TicketType:
    """The event's ticket type with seats to pick; a 422 on `ticket_type_id` otherwise."""
    ticket_type = event.ticket_types.get(ticket_type_id)
    if ticket_type is None:
        raise invalid_request("ticket_type_id", f"ticket type {ticket_type_id} is not this event's")
    if not seat_selection.seated_sections(event.sections, ticket_type):
        raise invalid_request("ticket_type_id", f"ticket type {ticket_type_id} has no seats")
    return ticket_type


async def auto_select(request: web.Request) -> web.Response:
    """Fewer seats than requested is an answer, not an error: `count` says how many exist.
    Seats offered to another buyer moments ago are passed over while others are free; while
    other gateways suggest the event's seats too, this one suggests from its own rows first."""
    event = await event_seats(request)
    body = await parse_body(request, AutoSelectRequest)
    ticket_type = _seated_type(event, body.ticket_type_id)
    by_id = {s.id: s for s in event.sections}
    try:
        for i, seat in enumerate(body.near):
            seat_selection.check_seat(by_id, seat, f"near[{i}]")
    except InvalidCommand as exc:
        raise from_domain(exc) from None
    offers = request.app[OFFERS]
    seats_here = request.app[PURCHASES].seats
    taken = await seats_here.to_pass_over(event.id, event.taken, DESK_IN_STEP_SECONDS)
    unoffered = taken.plus(offers.recent(event.id))
    # Passed over in turn, until one leaves enough seats: this gateway's lane, the seats offered
    # elsewhere, and none but the taken ones.
    tiers = [unoffered, taken]
    lanes, lane = offers.lane(event.id)
    if lanes > 1:
        tiers.insert(0, unoffered.plus(seating.outside_lane(event.sections, lanes, lane)))
    seats = _passing_over(event, ticket_type, body, tiers)
    await offers.offer(event.id, map(seating.seat_key, seats))
    request.app[PURCHASES].expect(organization_of(request), request.match_info["slug"])
    return json_response(AutoSelection(seats=seats, count=len(seats), requested=body.count))


def _passing_over(
    event: EventSeats, ticket_type: TicketType, body: AutoSelectRequest, tiers: list[TakenSeats]
) -> list[SeatRef]:
    """The first tier's seats that leave enough. Seats near a buyer's own pass over nothing
    but the taken ones: the spec's "same row first" (passing over offered seats moved the
    buyer to another row, or split a party along the row), and such a buyer is no on-sale's
    crowd asking at once for the same block."""

    def choose(unavailable: TakenSeats) -> list[SeatRef]:
        return seating.best_available(
            event.sections, ticket_type.section_ids, unavailable, body.count, body.near
        )

    if not body.near:
        for unavailable in tiers[:-1]:
            seats = choose(unavailable)
            if len(seats) >= body.count:
                return seats
    return choose(tiers[-1])


def _by_type_id(selected: dict[str, list[SeatRef]]) -> dict[int, list[SeatRef]]:
    """JSON object keys are strings; the ticket type ids in them must be plain integers (the
    key's pattern is checked here rather than by the decoder, which would not name the key)."""
    for type_id in selected:
        if not CANONICAL_ID.match(type_id):
            raise invalid_request(f"selected_seats.{type_id}", "keys are ticket type ids")
    return {int(type_id): seats for type_id, seats in selected.items()}


async def validate_seats(request: web.Request) -> web.Response:
    """A seat that is not in the venue is a 422, a taken one a conflict: the first is the
    caller's bug, the second another buyer's doing. Read as availability is (a seat bought
    or given back a moment ago is told so by the gateway that sold it)."""
    event, _ = await event_seats_now(request)
    body = await parse_body(request, SeatValidationRequest)
    selection = _by_type_id(body.selected_seats)
    try:
        found = seat_selection.conflicts(event.sections, selection, event.ticket_types, event.taken)
    except InvalidCommand as exc:
        raise from_domain(exc) from None
    return json_response(SeatValidation(available=not found, conflicts=found))


ROUTES = [
    Route(
        "POST",
        "/api/v1/events/{slug}/seats/auto-select",
        auto_select,
        "Pick the best available seats for a ticket type, optionally near a selection",
        "Seat plans",
        AutoSelection,
        body=AutoSelectRequest,
        errors=(401, 404, 422, 429),
        path_params={"slug": str},
        lane="browsing",
    ),
    Route(
        "POST",
        "/api/v1/events/{slug}/seats/validate",
        validate_seats,
        "Check a seat selection is still free (non-locking)",
        "Seat plans",
        SeatValidation,
        body=SeatValidationRequest,
        errors=(401, 404, 422, 429),
        path_params={"slug": str},
        lane="browsing",
    ),
]
