"""How many of each ticket type can still be sold, and whether an event is on sale: the rules
shared by what the API displays and what a purchase is decided against."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal

from domain.catalog import TicketType
from domain.venues import Section

EventStatus = Literal[
    "available", "draft", "cancelled", "sales_not_started", "sales_ended", "sold_out"
]
AttractionStatus = Literal["available", "sold_out", "sales_ended", "closed"]
# Whether a visit day can be visited (domain/inventory/attraction_days.py `visit_day`).
VisitDay = Literal["open", "past", "closed"]
# What an attraction's type with no cap of its own, and no daily cap, shows as left.
UNLIMITED = 9999


def available_per_type(
    sections: Sequence[Section],
    ticket_types: Sequence[TicketType],
    taken_per_section: Mapping[int, int],
    taken_per_type: Mapping[int, int],
) -> dict[int, int]:
    """Seated types: free seats in their sections. Standing types: the standing places of
    their sections less what every type sharing those sections took. Types without sections:
    their capacity. A type's own capacity caps all of these. A section no longer in the plan
    has nothing left to sell (a plan change keeps the sections events sell from, but an event
    cancelled or over may still name one)."""
    by_id = {s.id: s for s in sections}
    standing_users: Counter[int] = Counter()
    for t in ticket_types:
        for sid in t.section_ids:
            if sid in by_id and by_id[sid].seating_mode == "standing":
                standing_users[sid] += taken_per_type.get(t.id, 0)
    result: dict[int, int] = {}
    for t in ticket_types:
        own = [by_id[sid] for sid in t.section_ids if sid in by_id]
        if not t.section_ids:
            free = (t.capacity or 0) - taken_per_type.get(t.id, 0)
        elif not own:
            free = 0
        elif own[0].seating_mode == "seated":
            free = sum(s.seated_capacity - taken_per_section.get(s.id, 0) for s in own)
        else:
            free = sum(s.standing_capacity - standing_users[s.id] for s in own)
        if own and t.capacity is not None:
            free = min(free, t.capacity - taken_per_type.get(t.id, 0))
        result[t.id] = max(0, free)
    return result


def early_bird_active(ticket_type: TicketType, now: datetime) -> bool:
    return (
        ticket_type.early_bird_price_cents is not None
        and ticket_type.early_bird_end_date is not None
        and now < ticket_type.early_bird_end_date
    )


def event_status(
    listing_status: str,
    sales_start: datetime | None,
    sales_end: datetime | None,
    event_date: datetime,
    available: Iterable[int],
    now: datetime,
) -> EventStatus:
    """Draft and cancelled first, then the sales window (sales end at the latest when the
    event starts), then stock."""
    if listing_status == "draft":
        return "draft"
    if listing_status == "cancelled":
        return "cancelled"
    if sales_start is not None and now < sales_start:
        return "sales_not_started"
    if now >= min(sales_end or event_date, event_date):
        return "sales_ended"
    if not any(n > 0 for n in available):
        return "sold_out"
    return "available"


def attraction_left(
    types: Iterable[TicketType], taken_per_type: Mapping[int, int], daily_max: int | None
) -> dict[int, int]:
    """What is left of each of an attraction's ticket types: a type's remaining capacity; a
    type without one is bounded only by the daily cap (shown as the cap, or UNLIMITED)."""
    fallback = daily_max or UNLIMITED
    return {
        t.id: fallback if t.capacity is None else max(0, t.capacity - taken_per_type.get(t.id, 0))
        for t in types
    }


def attraction_day(
    left: Mapping[int, int], daily_max: int | None, day: VisitDay | None, taken_that_day: int
) -> tuple[AttractionStatus, dict[int, int], int | None]:
    """The availability answer's status, types and places left for a visit day (`day` None
    without a date): nothing on a day the purchase would refuse, and no type more than the
    day has left."""
    remaining = None
    if day in _REFUSED_DAYS:
        remaining = 0
    elif day == "open" and daily_max is not None:
        remaining = max(0, daily_max - taken_that_day)
    shown = dict(left) if remaining is None else {t: min(n, remaining) for t, n in left.items()}
    status = _REFUSED_DAYS.get(day) if day else None
    return status or ("available" if any(shown.values()) else "sold_out"), shown, remaining


# A day the purchase refuses: a past one as an event whose sales ended, a closed weekday as
# closed (not sold out: nothing was sold, and another day may have every place).
_REFUSED_DAYS: dict[VisitDay, AttractionStatus] = {"past": "sales_ended", "closed": "closed"}
