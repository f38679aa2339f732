"""The partner API's read payloads as msgspec types: what the handlers encode and what the
OpenAPI document describes, field for field as in the spec's examples."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from domain.catalog import OpeningHours
from domain.inventory.events import SeatRef
from domain.inventory.stock import AttractionStatus
from domain.venues import Row

EventStatus = Literal[
    "available", "draft", "cancelled", "sales_not_started", "sales_ended", "sold_out"
]


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """Response bodies: every field is always present (null rather than missing)."""


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """Query parameters; unknown ones are ignored."""


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: a misspelt field is a 422, not silently ignored."""


class Organization(Payload):
    id: int
    name: str
    description: str | None
    image_url: str | None
    primary_color: str
    currency: str


class OrganizationResponse(Payload):
    organization: Organization


class VenueRef(Payload):
    id: int
    name: str
    city: str | None


class VenueAddress(VenueRef, frozen=True, kw_only=True):
    address: str | None
    zip_code: str | None


class Venue(VenueAddress, frozen=True, kw_only=True):
    seated_capacity: int
    standing_capacity: int
    floor_plan_width: int
    floor_plan_height: int


class VenueResponse(Payload):
    venue: Venue


class VenueList(Payload):
    venues: list[Venue]
    count: int


class EventSummary(Payload):
    id: int
    slug: str
    name: str
    event_date: datetime
    event_end_date: datetime | None
    sales_start_date: datetime | None
    sales_end_date: datetime | None
    venue: VenueRef


class EventList(Payload):
    events: list[EventSummary]
    count: int


class LimitQuery(Query):
    limit: Annotated[int, Meta(ge=1, le=100, description="Max entries, default 25")] = 25


class EventDetail(Payload):
    id: int
    slug: str
    name: str
    description: str | None
    event_date: datetime
    event_end_date: datetime | None
    doors_open: datetime | None
    sales_start_date: datetime | None
    sales_end_date: datetime | None
    status: EventStatus
    currency: str
    venue: VenueAddress


class EventTicketType(Payload):
    id: int
    name: str
    description: str | None
    price_cents: int
    currency: str
    early_bird_price_cents: int | None
    early_bird_end_date: datetime | None
    early_bird_active: bool
    category: str
    max_per_purchase: int
    section_ids: list[int]
    available: int


class EventResponse(Payload):
    event: EventDetail
    ticket_types: list[EventTicketType]


class EventAvailability(Payload):
    event_id: int
    status: EventStatus
    ticket_types: dict[str, int]
    sold_seats: list[SeatRef]


class SeatPlanQuery(Query):
    event_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]


class SeatPlanSection(Payload):
    id: int
    name: str
    display_order: int
    seating_mode: Literal["seated", "standing"]
    section_type: Literal["rectangle", "arc"]
    color: str
    position_x: float
    position_y: float
    rotation: float
    width: float | None
    height: float | None
    inner_radius: float | None
    outer_radius: float | None
    start_angle: float | None
    end_angle: float | None
    capacity: int
    rows: list[Row]


class SeatPlan(Payload):
    venue_id: int
    event_id: int
    sections: list[SeatPlanSection]
    sold_seats: list[SeatRef]
    ticket_type_section_map: dict[str, list[int]]


class AttractionSummary(Payload):
    id: int
    slug: str
    name: str
    visit_date_required: bool
    daily_max_tickets: int | None
    venue: VenueRef


class AttractionList(Payload):
    attractions: list[AttractionSummary]
    count: int


class AttractionDetail(Payload):
    id: int
    slug: str
    name: str
    description: str | None
    status: AttractionStatus
    visit_date_required: bool
    daily_max_tickets: int | None
    opening_hours: dict[str, OpeningHours]
    currency: str
    venue: VenueAddress


class AttractionTicketType(Payload):
    id: int
    name: str
    description: str | None
    price_cents: int
    currency: str
    category: str
    max_per_purchase: int
    available: int


class AttractionResponse(Payload):
    attraction: AttractionDetail
    ticket_types: list[AttractionTicketType]


class AttractionAvailabilityQuery(Query):
    date: date | None = None


class AttractionAvailability(Payload):
    """`date` and `date_remaining` are there when a date is asked for (`date_remaining` null
    where the attraction has no daily cap), left out otherwise."""

    attraction_id: int
    status: AttractionStatus
    ticket_types: dict[str, int]
    daily_max_tickets: int | None
    date: date | UnsetType = UNSET
    date_remaining: int | UnsetType | None = UNSET

    @classmethod
    def of_day(
        cls,
        attraction_id: int,
        status: AttractionStatus,
        shown: Mapping[int, int],
        daily_max_tickets: int | None,
        day: date | None,
        remaining: int | None,
    ) -> AttractionAvailability:
        return cls(
            attraction_id=attraction_id,
            status=status,
            ticket_types={str(tid): n for tid, n in shown.items()},
            daily_max_tickets=daily_max_tickets,
            date=UNSET if day is None else day,
            date_remaining=UNSET if day is None else remaining,
        )
