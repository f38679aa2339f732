"""An attraction's inventory aggregate: the places its ticket types and visit days have taken, by
purchase. It decides holds and releases against its own stream's state, so the stream's
optimistic concurrency is the lock that keeps every type and day within its limit."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import msgspec

from domain.catalog import AttractionOpened
from domain.errors import DomainError, InvalidCommand, NotFound
from domain.events import Event
from domain.inventory.events import (
    AttractionTicketsHeld,
    AttractionTicketsReleased,
    AttractionTicketsReturned,
)
from domain.inventory.holds import InsufficientAvailability, counts_left
from domain.inventory.stock import VisitDay


class DailyCapacityExceeded(DomainError):
    code = "daily_capacity_exceeded"


@dataclass
class AttractionInventory:
    opened: AttractionOpened | None = None
    taken_per_type: Counter[int] = field(default_factory=Counter)
    taken_per_day: Counter[date] = field(default_factory=Counter)
    holds: dict[str, AttractionTicketsHeld] = field(default_factory=dict)


def evolve_attraction(state: AttractionInventory, event: Event) -> AttractionInventory:
    match event:
        case AttractionOpened():
            state.opened = event
        case AttractionTicketsHeld():
            state.taken_per_type.update(event.counts)
            if event.visit_date is not None:
                state.taken_per_day[event.visit_date] += sum(event.counts.values())
            state.holds[event.purchase_token] = event
        case AttractionTicketsReleased() | AttractionTicketsReturned():
            state.taken_per_type.subtract(event.counts)
            if event.visit_date is not None:
                state.taken_per_day[event.visit_date] -= sum(event.counts.values())
            hold = state.holds.pop(event.purchase_token, None)
            if isinstance(event, AttractionTicketsReturned) and hold is not None:
                left = counts_left(hold.counts, event.counts)
                if left:
                    state.holds[event.purchase_token] = msgspec.structs.replace(hold, counts=left)
    return state


def clone_attraction(state: AttractionInventory) -> AttractionInventory:
    """A copy to decide a batch of commands on: the original only ever holds stored events."""
    return AttractionInventory(
        opened=state.opened,
        taken_per_type=Counter(state.taken_per_type),
        taken_per_day=Counter(state.taken_per_day),
        holds=dict(state.holds),
    )


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def local_date(moment: datetime, zone: str) -> date:
    """The organization's calendar day at `moment`: its visit days start at local midnight."""
    return moment.astimezone(ZoneInfo(zone)).date()


def visit_day(opened: AttractionOpened, visit_date: date, today: date) -> VisitDay:
    """Whether a day can be visited: not before `today` (the organization's local date), and
    on a weekday with opening hours when the attraction lists any. The purchase refuses and
    the availability answer reports by this one rule, so they never disagree."""
    if visit_date < today:
        return "past"
    if opened.opening_hours and WEEKDAYS[visit_date.weekday()] not in opened.opening_hours:
        return "closed"
    return "open"


def hold_attraction_tickets(
    state: AttractionInventory,
    *,
    token: str,
    quantities: dict[int, int],
    visit_date: date | None,
    today: date,
    expires_at: datetime,
) -> AttractionTicketsHeld:
    """`today`: the organization's local date (`local_date`)."""
    opened = state.opened
    if opened is None:
        raise NotFound("attraction not found", "attraction_slug")
    if opened.visit_date_required and visit_date is None:
        raise InvalidCommand("this attraction needs a visit_date", "visit_date")
    if visit_date is not None:
        match visit_day(opened, visit_date, today):
            case "past":
                raise InvalidCommand("visit_date is in the past", "visit_date")
            case "closed":
                raise InvalidCommand("the attraction is closed on that day", "visit_date")
    total = sum(quantities.values())
    if opened.daily_max_tickets is not None and visit_date is not None:
        left = opened.daily_max_tickets - state.taken_per_day[visit_date]
        if total > left:
            raise DailyCapacityExceeded(f"only {max(left, 0)} places left on {visit_date}")
    for t in opened.ticket_types:
        wanted = quantities.get(t.id, 0)
        if t.capacity is not None and state.taken_per_type[t.id] + wanted > t.capacity:
            raise InsufficientAvailability(f"not enough {t.name} tickets left")
    return AttractionTicketsHeld(
        attraction_id=opened.attraction_id,
        purchase_token=token,
        visit_date=visit_date,
        counts={tid: n for tid, n in quantities.items() if n > 0},
        expires_at=expires_at,
    )


def release_attraction_tickets(state: AttractionInventory, token: str, reason: str) -> list[Event]:
    hold = state.holds.get(token)
    if hold is None:
        return []
    return [
        AttractionTicketsReleased(
            attraction_id=hold.attraction_id,
            purchase_token=token,
            visit_date=hold.visit_date,
            counts=hold.counts,
            reason=reason,
        )
    ]


def return_attraction_tickets(
    state: AttractionInventory, token: str, counts: dict[int, int], reason: str
) -> list[Event]:
    """Give back some of a purchase's places (a refund's tickets), within what it holds."""
    hold = state.holds.get(token)
    if hold is None:
        return []
    counted = {tid: min(n, hold.counts.get(tid, 0)) for tid, n in counts.items()}
    counted = {tid: n for tid, n in counted.items() if n > 0}
    if not counted:
        return []
    return [
        AttractionTicketsReturned(
            attraction_id=hold.attraction_id,
            purchase_token=token,
            visit_date=hold.visit_date,
            counts=counted,
            reason=reason,
        )
    ]


def rehold_attraction_tickets(
    state: AttractionInventory, previous: AttractionTicketsHeld
) -> AttractionTicketsHeld:
    """A late payment for an attraction: the same places if the day and types still have them."""
    opened = state.opened
    assert opened is not None
    total = sum(previous.counts.values())
    day = previous.visit_date
    cap = opened.daily_max_tickets
    if cap is not None and day is not None and state.taken_per_day[day] + total > cap:
        raise DailyCapacityExceeded("the day sold out meanwhile")
    for t in opened.ticket_types:
        wanted = previous.counts.get(t.id, 0)
        if t.capacity is not None and state.taken_per_type[t.id] + wanted > t.capacity:
            raise InsufficientAvailability("the ticket type sold out meanwhile")
    return previous
