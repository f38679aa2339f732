"""Small builders for the aggregates' unit tests: one hall with seats and a standing floor, an
event on sale in it, a museum, a discount code and a purchase, each with its defaults changed
by keyword. Shared, so no test file writes a catalog fact again."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from domain.catalog import AttractionOpened, EventPublished, EventScheduled, TicketType
from domain.discounts import DiscountCodeCreated
from domain.errors import DomainError
from domain.events import Event
from domain.inventory import attraction_days, holds
from domain.inventory.events import SeatRef
from domain.pricing import Pricing
from domain.purchasing import Buyer, PurchasedTicket, PurchaseOpened
from domain.venues import Row, Section, VenueRegistered

NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)
HOLD_ENDS = NOW + timedelta(minutes=30)
SHOW_STARTS = NOW + timedelta(days=10)

HALL, FLOOR = 12, 13
# Ticket types of the show; EXTRA is a third one a test shapes as it needs (seated, standing...).
VOKSEN, STAAENDE, EXTRA = 45, 46, 47
HALL_SECTION = Section(
    id=HALL,
    name="Sal",
    width=100.0,
    height=50.0,
    rows=[Row(identifier="A", start=1, end=4), Row(identifier="B", start=1, end=4)],
)
FLOOR_SECTION = Section(
    id=FLOOR,
    name="Gulv",
    seating_mode="standing",
    width=10.0,
    height=10.0,
    standing_capacity=5,
)
SECTIONS = [HALL_SECTION, FLOOR_SECTION]

S = TypeVar("S")
T = TypeVar("T")


def apply(evolve: Callable[[S, Event], S], state: S, events: Iterable[Event]) -> S:
    """The state the next decision sees once `events` are stored."""
    for event in events:
        state = evolve(state, event)
    return state


def replayed(
    evolve: Callable[[T | None, Event], T | None], state: T | None, events: Iterable[Event]
) -> T:
    """The state of a stream that has begun, once `events` are stored."""
    after = apply(evolve, state, events)
    assert after is not None
    return after


@contextmanager
def refused(error: type[DomainError], code: str, field: str | None = None) -> Iterator[Any]:
    """The command is refused with this error, its partner API code and the field it names."""
    with pytest.raises(error) as caught:
        yield caught
    assert (caught.value.code, caught.value.field) == (code, field), caught.value.detail


def seat(row: str, number: int, section_id: int = HALL) -> SeatRef:
    return SeatRef(section_id=section_id, row=row, seat_number=number)


def ticket_type(type_id: int, **changes: Any) -> TicketType:
    base: dict[str, Any] = {"id": type_id, "name": f"Type {type_id}", "price_cents": 35000}
    return TicketType(**(base | changes))


SHOW_TYPES = [
    ticket_type(VOKSEN, name="Voksen", section_ids=[HALL]),
    ticket_type(STAAENDE, name="Ståplads", price_cents=20000, section_ids=[FLOOR]),
]


def venue(organization_id: int = 1) -> VenueRegistered:
    return VenueRegistered(
        venue_id=2,
        organization_id=organization_id,
        key="sal",
        name="Sal",
        address=None,
        city=None,
        zip_code=None,
        floor_plan_width=1200,
        floor_plan_height=800,
        sections=SECTIONS,
    )


def scheduled(**changes: Any) -> EventScheduled:
    base: dict[str, Any] = {
        "event_id": 3,
        "organization_id": 1,
        "venue_id": 2,
        "slug": "hamlet",
        "name": "Hamlet",
        "description": None,
        "event_date": SHOW_STARTS,
        "event_end_date": None,
        "doors_open": None,
        "sales_start_date": None,
        "sales_end_date": None,
        "ticket_types": SHOW_TYPES,
    }
    return EventScheduled(**(base | changes))


def on_sale(**changes: Any) -> holds.EventInventory:
    """An event's inventory, published, with nothing held yet."""
    event = scheduled(**changes)
    return apply(
        holds.evolve_inventory,
        holds.EventInventory(),
        [event, EventPublished(event_id=event.event_id)],
    )


def museum(**changes: Any) -> AttractionOpened:
    base: dict[str, Any] = {
        "attraction_id": 5,
        "organization_id": 1,
        "venue_id": 2,
        "slug": "museum",
        "name": "Museum",
        "description": None,
        "visit_date_required": False,
        "daily_max_tickets": None,
        "opening_hours": {},
        "ticket_types": [ticket_type(7, name="Voksen", price_cents=10000)],
    }
    return AttractionOpened(**(base | changes))


def museum_inventory(**changes: Any) -> attraction_days.AttractionInventory:
    return attraction_days.evolve_attraction(
        attraction_days.AttractionInventory(), museum(**changes)
    )


def discount_code(**changes: Any) -> DiscountCodeCreated:
    base: dict[str, Any] = {
        "discount_id": 9,
        "organization_id": 1,
        "code": "SPRING25",
        "percentage": 25,
        "amount_cents": None,
        "applies_to_all": True,
        "ticket_type_ids": [],
        "valid_from": None,
        "valid_until": None,
        "max_uses": None,
    }
    return DiscountCodeCreated(**(base | changes))


def pricing(subtotal_cents: int = 70000, fee_cents: int = 0) -> Pricing:
    return Pricing(
        subtotal_cents=subtotal_cents,
        discount_cents=0,
        fee_cents=fee_cents,
        total_cents=subtotal_cents + fee_cents,
        currency="DKK",
        line_items=[],
        discount=None,
    )


def purchased_ticket(ticket_id: int, **changes: Any) -> PurchasedTicket:
    base: dict[str, Any] = {
        "id": ticket_id,
        "code": f"CODE{ticket_id}",
        "attendee_token": f"att{ticket_id}",
        "ticket_type_id": VOKSEN,
        "ticket_type_name": "Voksen",
        "amount_cents": 35000,
        "seat": seat("A", ticket_id),
        "name": None,
        "email": None,
    }
    return PurchasedTicket(**(base | changes))


def purchase_opened(**changes: Any) -> PurchaseOpened:
    """A purchase of two seats for the event, open until HOLD_ENDS."""
    base: dict[str, Any] = {
        "token": "tok",
        "organization_id": 1,
        "api_key_id": None,
        "event_id": 3,
        "attraction_id": None,
        "product_slug": "hamlet",
        "product_name": "Hamlet",
        "visit_date": None,
        "buyer": Buyer(name="Ann", email="ann@example.com"),
        "tickets": [purchased_ticket(1), purchased_ticket(2)],
        "pricing": pricing(),
        "discount_id": None,
        "stripe_account_id": "acct_x",
        "comment": None,
        "access_code": "ABCDEFGH",
        "opened_at": NOW,
        "expires_at": HOLD_ENDS,
    }
    return PurchaseOpened(**(base | changes))
