"""An event's inventory aggregate: its seats and ticket-type counts, taken by purchase. It
decides holds and releases against its own stream's state, so the stream's optimistic
concurrency is the lock that keeps every seat and type within its limit. An attraction's
aggregate (domain/inventory/attraction_days.py) shares its refusal of a sold-out type and its
arithmetic of counts returned."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from domain.catalog import (
    EventCancelled,
    EventListing,
    EventPublished,
    EventScheduled,
    TicketType,
    evolve_listing,
)
from domain.errors import DomainError, InvalidCommand, NotFound
from domain.events import Event
from domain.inventory.events import (
    HeldSeat,
    SeatRef,
    SeatsHeld,
    SeatsReleased,
    SeatsReturned,
)
from domain.inventory.stock import available_per_type
from domain.seat_selection import check_distinct
from domain.seating import (
    RowKey,
    SeatKey,
    TakenSeats,
    best_available,
    by_row,
    seat_key,
    selected_keys,
)
from domain.venues import Section


class SeatsTaken(DomainError):
    code = "seats_taken"


class DecidedBefore(SeatsTaken):
    """The seats are held by the draft's own purchase: it was decided before (by an owner that
    answered too late, or a request whose gateway died), and that purchase is the answer."""


class InsufficientAvailability(DomainError):
    code = "insufficient_availability"


@dataclass
class EventInventory:
    """An event as a seller sees it: its listing, and every seat and count taken, by purchase.
    Evolved in place (an on-sale appends thousands of holds; copying would be quadratic)."""

    listing: EventListing | None = None
    taken: dict[SeatKey, str] = field(default_factory=dict)
    taken_per_type: Counter[int] = field(default_factory=Counter)
    holds: dict[str, SeatsHeld] = field(default_factory=dict)
    # Kept as holds come and go, so a hold costs its own seats, not a pass over every taken one.
    taken_by_row: dict[RowKey, set[int]] = field(default_factory=dict)

    @property
    def ticket_types(self) -> dict[int, TicketType]:
        assert self.listing is not None
        return {t.id: t for t in self.listing.scheduled.ticket_types}

    @property
    def taken_per_section(self) -> Counter[int]:
        per_section: Counter[int] = Counter()
        for (section_id, _), numbers in self.taken_by_row.items():
            per_section[section_id] += len(numbers)
        return per_section


def evolve_inventory(state: EventInventory, event: Event) -> EventInventory:
    match event:
        case EventScheduled() | EventPublished() | EventCancelled():
            state.listing = evolve_listing(state.listing, event)
        case SeatsHeld():
            for seat in event.seats:
                state.taken[seat_key(seat)] = event.purchase_token
                state.taken_by_row.setdefault((seat.section_id, seat.row), set()).add(
                    seat.seat_number
                )
            state.taken_per_type.update(event.counts)
            state.holds[event.purchase_token] = event
        case SeatsReleased() | SeatsReturned():
            for seat in event.seats:
                if state.taken.pop(seat_key(seat), None) is not None:
                    state.taken_by_row[(seat.section_id, seat.row)].discard(seat.seat_number)
            state.taken_per_type.subtract(event.counts)
            hold = state.holds.pop(event.purchase_token, None)
            if isinstance(event, SeatsReturned) and hold is not None:
                rest = _seats_left(hold, event.seats, event.counts)
                if rest.counts:
                    state.holds[event.purchase_token] = rest
    return state


def counts_left(counts: dict[int, int], returned: dict[int, int]) -> dict[int, int]:
    """What is left of a hold's counts once some are returned: types with none left go."""
    left = {tid: n - returned.get(tid, 0) for tid, n in counts.items()}
    return {tid: n for tid, n in left.items() if n > 0}


def _seats_left(hold: SeatsHeld, seats: list[HeldSeat], counts: dict[int, int]) -> SeatsHeld:
    """What a hold keeps once some of its seats and counts are returned."""
    gone = {seat_key(s) for s in seats}
    return msgspec.structs.replace(
        hold,
        seats=[s for s in hold.seats if seat_key(s) not in gone],
        counts=counts_left(hold.counts, counts),
    )


def clone_inventory(state: EventInventory) -> EventInventory:
    """A copy to decide a batch of commands on: the original only ever holds stored events."""
    return EventInventory(
        listing=state.listing,
        taken=dict(state.taken),
        taken_per_type=Counter(state.taken_per_type),
        holds=dict(state.holds),
        taken_by_row={row: set(numbers) for row, numbers in state.taken_by_row.items()},
    )


def check_on_sale(listing: EventListing | None, now: datetime) -> EventScheduled:
    """The event can be sold now, or an InvalidCommand saying why not."""
    if listing is None or listing.status == "draft":
        raise NotFound("event not found", "event_slug")
    event = listing.scheduled
    if listing.status == "cancelled":
        raise InvalidCommand("the event is cancelled", "event_slug")
    if event.sales_start_date is not None and now < event.sales_start_date:
        raise InvalidCommand("ticket sales have not started", "event_slug")
    if now >= min(event.sales_end_date or event.event_date, event.event_date):
        raise InvalidCommand("ticket sales have ended", "event_slug")
    return event


def _seated(section_ids: list[int], sections: dict[int, Section]) -> bool:
    """A type whose sections have all left the plan is not: it has no place left to sell."""
    planned = [sections[sid] for sid in section_ids if sid in sections]
    return bool(planned) and planned[0].seating_mode == "seated"


def _check_selected(
    tid: int, seats: list[SeatRef], allowed: list[int], sections: dict[int, Section]
) -> None:
    for i, seat in enumerate(seats):
        field_name = f"selected_seats.{tid}[{i}]"
        section = sections.get(seat.section_id)
        if section is None or seat.section_id not in allowed:
            raise InvalidCommand("the ticket type cannot be used in that section", field_name)
        rows = {r.identifier: r for r in section.rows}
        row = rows.get(seat.row)
        if row is None or not row.start <= seat.seat_number <= row.end:
            raise InvalidCommand("no such seat in the venue", field_name)


def _party_seats(
    sections: list[Section],
    types: Mapping[int, TicketType],
    wanted: dict[int, int],
    taken: TakenSeats,
) -> dict[int, list[SeatRef]]:
    """A party of several ticket types without chosen seats sits together: the best seats for
    all of it in the sections every one of its types may use, dealt out type by type in their
    order. None when those sections have too few seats: each type then takes its own best
    seats."""
    common = set.intersection(*(set(types[tid].section_ids) for tid in wanted))
    total = sum(wanted.values())
    seats = best_available(sections, sorted(common), taken, total) if common else []
    if len(seats) < total:
        return {}
    dealt: dict[int, list[SeatRef]] = {}
    for tid, n in sorted(wanted.items()):
        dealt[tid], seats = seats[:n], seats[n:]
    return dealt


def hold_seats(
    state: EventInventory,
    sections: list[Section],
    *,
    token: str,
    quantities: dict[int, int],
    selected: dict[int, list[SeatRef]],
    now: datetime,
    expires_at: datetime,
) -> SeatsHeld:
    """Take the requested seats (or the best free ones when a seated type has none selected)
    and counts, all or nothing."""
    event = check_on_sale(state.listing, now)
    types = state.ticket_types
    by_id = {s.id: s for s in sections}
    for tid in selected:
        if tid not in quantities:
            raise InvalidCommand(
                "seats given for a ticket type not in quantities", "selected_seats"
            )
    check_distinct(selected)
    available = available_per_type(
        sections, list(types.values()), state.taken_per_section, state.taken_per_type
    )
    held: list[HeldSeat] = []
    # Seats this purchase takes: the selected ones from the start, so a type chosen for by
    # best available never lands on a seat selected for another type.
    claimed = selected_keys(selected)
    unselected = {
        tid: n
        for tid, n in quantities.items()
        if n > 0 and tid not in selected and _seated(types[tid].section_ids, by_id)
    }
    together = (
        _party_seats(
            sections, types, unselected, TakenSeats(state.taken_by_row).plus(by_row(claimed))
        )
        if len(unselected) > 1
        else {}
    )
    # Near the seats the party chose itself: same row first, then same section.
    near = [seat for seats in selected.values() for seat in seats]
    for tid, quantity in sorted(quantities.items()):
        t = types[tid]
        if not _seated(t.section_ids, by_id):
            if selected.get(tid):
                raise InvalidCommand(
                    f"ticket type {tid} has no seats to select", f"selected_seats.{tid}[0]"
                )
            if quantity > available[tid]:
                raise InsufficientAvailability(f"only {available[tid]} left of {t.name}")
            continue
        if t.capacity is not None and state.taken_per_type[tid] + quantity > t.capacity:
            raise InsufficientAvailability(f"not enough {t.name} tickets left")
        seats = selected.get(tid, together.get(tid))
        if seats is None:
            taken = TakenSeats(state.taken_by_row).plus(by_row(claimed))
            seats = best_available(sections, t.section_ids, taken, quantity, near=near)
            if len(seats) < quantity:
                raise InsufficientAvailability(f"only {len(seats)} seats left for {t.name}")
        else:
            if len(seats) != quantity:
                raise InvalidCommand(
                    f"{quantity} seats needed for ticket type {tid}", f"selected_seats.{tid}"
                )
            _check_selected(tid, seats, t.section_ids, by_id)
        for seat in seats:
            key = seat_key(seat)
            if key in state.taken:
                refusal = DecidedBefore if state.taken[key] == token else SeatsTaken
                raise refusal(f"seat {seat.row}{seat.seat_number} is taken")
            claimed.add(key)
            held.append(HeldSeat(ticket_type_id=tid, **msgspec.structs.asdict(seat)))
    return SeatsHeld(
        event_id=event.event_id,
        purchase_token=token,
        seats=held,
        counts={tid: n for tid, n in quantities.items() if n > 0},
        expires_at=expires_at,
    )


def release_seats(state: EventInventory, token: str, reason: str) -> list[Event]:
    """Give back what a purchase holds; nothing when it holds nothing (already released)."""
    hold = state.holds.get(token)
    if hold is None:
        return []
    return [
        SeatsReleased(
            event_id=hold.event_id,
            purchase_token=token,
            seats=hold.seats,
            counts=hold.counts,
            reason=reason,
        )
    ]


def return_seats(
    state: EventInventory, token: str, seats: list[HeldSeat], counts: dict[int, int], reason: str
) -> list[Event]:
    """Give back some of what a purchase holds (a refund's tickets): only seats and counts the
    hold has; nothing when it has none of them."""
    hold = state.holds.get(token)
    if hold is None:
        return []
    held = {seat_key(s) for s in hold.seats}
    back = [s for s in seats if seat_key(s) in held]
    counted = {tid: min(n, hold.counts.get(tid, 0)) for tid, n in counts.items()}
    counted = {tid: n for tid, n in counted.items() if n > 0}
    if not counted:
        return []
    return [
        SeatsReturned(
            event_id=hold.event_id,
            purchase_token=token,
            seats=back,
            counts=counted,
            reason=reason,
        )
    ]


def rehold_seats(
    state: EventInventory, sections: list[Section], previous: SeatsHeld, expires_at: datetime
) -> SeatsHeld:
    """A payment arrived after its hold was released: the same seats and places again, if all
    are still free."""
    for seat in previous.seats:
        if seat_key(seat) in state.taken:
            raise SeatsTaken(f"seat {seat.row}{seat.seat_number} was sold to someone else")
    types = state.ticket_types
    by_id = {s.id: s for s in sections}
    available = available_per_type(
        sections, list(types.values()), state.taken_per_section, state.taken_per_type
    )
    for tid, n in previous.counts.items():
        cap = types[tid].capacity
        if cap is not None and state.taken_per_type[tid] + n > cap:
            raise InsufficientAvailability("the ticket type sold out meanwhile")
        if not _seated(types[tid].section_ids, by_id) and n > available[tid]:
            raise InsufficientAvailability(f"only {available[tid]} left of {types[tid].name}")
    return msgspec.structs.replace(previous, expires_at=expires_at)
