"""`linjerum state STREAM --as-of TIME`: an aggregate as its own fold left it at a moment (what
a decision made then was decided against), and for an event's or an attraction's inventory
the availability answer that `GET /events/:slug/availability` (`GET
/attractions/:slug/availability`, for `--date` or none) would have given then."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import msgspec

from domain import catalog, discounts, purchasing, refunds, streams, tickets, transfers, venues
from domain.events import Event
from domain.inventory import attraction_days, holds
from domain.inventory.events import SeatRef, SeatsHeld
from domain.inventory.stock import attraction_day, attraction_left, available_per_type, event_status
from infra.eventstore import RecordedEvent, read_stream
from services.api.schemas import AttractionAvailability, EventAvailability
from services.cli_arguments import day


def _nothing() -> None:
    return None


# Every aggregate folded from a stream of its own, by the stream's category: its state before
# the first event, and the domain's evolve function.
FOLDS: dict[str, tuple[Callable[[], Any], Callable[[Any, Event], Any]]] = {
    streams.EVENT: (holds.EventInventory, holds.evolve_inventory),
    streams.ATTRACTION: (attraction_days.AttractionInventory, attraction_days.evolve_attraction),
    streams.DISCOUNT: (_nothing, discounts.evolve_discount),
    streams.PURCHASE: (_nothing, purchasing.evolve_purchase),
    streams.TICKET: (_nothing, tickets.evolve_ticket),
    streams.TRANSFER: (_nothing, transfers.evolve_transfer),
    streams.REFUND_REQUEST: (_nothing, refunds.evolve_refund_request),
    streams.VENUE: (_nothing, venues.evolve_venue),
}


class InventoryView(msgspec.Struct, frozen=True, kw_only=True):
    """An event's inventory as JSON can carry it: the holds by purchase token (every taken
    seat is in one), and the counts taken per ticket type."""

    listing: catalog.EventListing | None
    holds: dict[str, SeatsHeld]
    taken_per_type: dict[int, int]
    taken_seats: int


class StateAt(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str
    as_of: datetime
    version: int
    state: Any
    availability: EventAvailability | AttractionAvailability | None = None


def add_commands(add_parser: Any, since: Any) -> None:
    """The command's parser; `since` is the CLI's time type (ISO-8601 or a duration ago)."""
    state = add_parser(
        "state",
        help="an aggregate's state replayed up to a moment, with its availability then",
        description="Replay a stream's events recorded up to --as-of through its aggregate's "
        "own fold and print the state (and, for an event-NNN stream, the availability answer "
        "of that moment). Streams: " + ", ".join(f"{c}-ID" for c in FOLDS) + ".",
    )
    state.add_argument("stream", help="stream id, e.g. event-12, purchase-<token>, ticket-7")
    state.add_argument(
        "--as-of", type=since, default=None, help="ISO-8601 time or 15m, 2h, 1d ago (default now)"
    )
    state.add_argument(
        "--date",
        type=day,
        default=None,
        help="for an attraction-NNN stream: the visit day whose availability to show",
    )
    state.add_argument("--table", action="store_true", help="readable lines instead of JSON")


def fold(stream_id: str, recorded: Sequence[RecordedEvent], as_of: datetime) -> tuple[Any, int]:
    """The state after the stream's events up to `as_of` (a prefix of the stream: a later
    version is never folded before an earlier one), and how many that was."""
    initial, evolve = FOLDS[streams.category(stream_id)]
    state = initial()
    upto = list(itertools.takewhile(lambda r: r.recorded_at <= as_of, recorded))
    for r in upto:
        state = evolve(state, r.event())
    return state, len(upto)


def _view(state: Any) -> Any:
    if isinstance(state, holds.EventInventory):
        return InventoryView(
            listing=state.listing,
            holds=state.holds,
            taken_per_type=dict(+state.taken_per_type),
            taken_seats=len(state.taken),
        )
    return state


async def availability_at(
    pool: asyncpg.Pool, inventory: holds.EventInventory, as_of: datetime
) -> EventAvailability | None:
    """What the availability endpoint would have answered at `as_of`, by the same counting
    rules, from the replayed holds and the venue's plan of that moment; None before the event
    was scheduled."""
    if inventory.listing is None:
        return None
    scheduled = inventory.listing.scheduled
    venue_stream = streams.venue(scheduled.venue_id)
    venue, _ = fold(venue_stream, await read_stream(pool, venue_stream), as_of)
    available = available_per_type(
        venue.sections if venue else [],
        scheduled.ticket_types,
        inventory.taken_per_section,
        +inventory.taken_per_type,
    )
    status = event_status(
        inventory.listing.status,
        scheduled.sales_start_date,
        scheduled.sales_end_date,
        scheduled.event_date,
        available.values(),
        as_of,
    )
    return EventAvailability(
        event_id=scheduled.event_id,
        status=status,
        ticket_types={str(tid): n for tid, n in available.items()},
        sold_seats=[
            SeatRef(section_id=section, row=row, seat_number=number)
            for section, row, number in sorted(inventory.taken)
        ],
    )


async def attraction_availability_at(
    pool: asyncpg.Pool,
    inventory: attraction_days.AttractionInventory,
    as_of: datetime,
    day: date | None,
) -> AttractionAvailability | None:
    """What the attraction's availability endpoint would have answered at `as_of` (for the
    visit day `day`, or none), by the same rules, from the replayed holds; None before it was
    opened."""
    opened = inventory.opened
    if opened is None:
        return None
    left = attraction_left(opened.ticket_types, inventory.taken_per_type, opened.daily_max_tickets)
    visit = None
    if day is not None:
        org_stream = streams.organization(opened.organization_id)
        registered = (await read_stream(pool, org_stream))[0].event()
        assert isinstance(registered, catalog.OrganizationRegistered)
        visit = attraction_days.visit_day(
            opened, day, attraction_days.local_date(as_of, registered.timezone)
        )
    taken = inventory.taken_per_day[day] if day is not None else 0
    status, shown, remaining = attraction_day(left, opened.daily_max_tickets, visit, taken)
    return AttractionAvailability.of_day(
        opened.attraction_id, status, shown, opened.daily_max_tickets, day, remaining
    )


async def _availability(
    pool: asyncpg.Pool, state: Any, as_of: datetime, day: date | None
) -> EventAvailability | AttractionAvailability | None:
    if isinstance(state, holds.EventInventory):
        return await availability_at(pool, state, as_of)
    if isinstance(state, attraction_days.AttractionInventory):
        return await attraction_availability_at(pool, state, as_of, day)
    return None


def _print_table(shown: StateAt) -> None:
    """One line per field of the state, its value as compact JSON; then the availability."""
    print(f"{shown.stream_id} at {shown.as_of.isoformat()} (version {shown.version})")
    fields = msgspec.to_builtins(_view(shown.state)) or {}
    width = max((len(name) for name in fields), default=0)
    for name, value in fields.items():
        print(f"  {name.ljust(width)}  {msgspec.json.encode(value).decode()}")
    if shown.availability is not None:
        print(f"availability: {shown.availability.status}")
        for tid, n in shown.availability.ticket_types.items():
            print(f"  ticket type {tid}: {n} available")
        if isinstance(shown.availability, EventAvailability):
            print(f"  sold seats: {len(shown.availability.sold_seats)}")
        elif shown.availability.date:  # neither None nor UNSET: a day was asked for
            print(f"  {shown.availability.date}: {shown.availability.date_remaining} left")


async def run(args: argparse.Namespace, pool: asyncpg.Pool) -> int:
    """Exit status 1 for a stream with no aggregate, or with no events up to the moment."""
    if streams.category(args.stream) not in FOLDS:
        print(
            f"linjerum state: {args.stream!r} is not a stream of an aggregate with a fold "
            f"({', '.join(FOLDS)}); `linjerum events {args.stream}` shows its history",
            file=sys.stderr,
        )
        return 1
    as_of = args.as_of or datetime.now(UTC)
    recorded = await read_stream(pool, args.stream)
    if not recorded:
        print(f"linjerum state: no stream {args.stream}", file=sys.stderr)
        return 1
    state, version = fold(args.stream, recorded, as_of)
    if version == 0:
        print(
            f"linjerum state: {args.stream} has no events up to {as_of.isoformat()}; its first"
            f" was recorded at {recorded[0].recorded_at.isoformat()}",
            file=sys.stderr,
        )
        return 1
    shown = StateAt(
        stream_id=args.stream,
        as_of=as_of,
        version=version,
        state=state,
        availability=await _availability(pool, state, as_of, args.date),
    )
    if args.table:
        _print_table(shown)
        return 0
    encoded = msgspec.json.encode(msgspec.structs.replace(shown, state=_view(state)))
    print(encoded.decode(), flush=True)
    return 0
