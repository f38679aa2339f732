"""The catalog: organizations, events with their ticket types, and attractions (venues and
their seat plans are domain/venues.py, discount codes domain/discounts.py). Each is
event-sourced; the functions here validate a command and return the events that record it, so
the rules live in one place and replay needs nothing else."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from domain.events import Event
from domain.fields import COLOR, Struct, aware, require, slug, text
from domain.venues import Section, VenueRegistered

CURRENCY = re.compile(r"^[A-Z]{3}\Z")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_PER_PURCHASE = 20
# The zone of organizations registered before they named one: the demo's and the first
# partner's (the ticket PDFs printed this zone's times already).
DEFAULT_TIMEZONE = "Europe/Copenhagen"


class FeeRule(Struct):
    """The organization's booking fee: basis points of the subtotal (before any discount, as
    in the spec's pricing example) plus a fixed amount per ticket."""

    percent_bps: int = 0
    per_ticket_cents: int = 0


ConsumerField = Literal[
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "date_of_birth",
    "gender",
    "address",
    "postal_code",
    "city",
    "country",
]


class PersonalizationPolicy(Struct):
    """The event asks each ticket's consumer for `required` fields, inside a window (start:
    from the sale on when unset; end: the event's start when unset)."""

    required: list[ConsumerField] = msgspec.field(
        default_factory=lambda: ["first_name", "last_name"]
    )
    starts_at: datetime | None = None
    ends_at: datetime | None = None


class TransferPolicy(Struct):
    """Whether a holder may pass a ticket on, and until when (unset: until the event starts)."""

    allowed: bool = True
    closes_at: datetime | None = None


class SaleChannel(Struct):
    """A place where a holder may offer a ticket (a waiting list, a resale marketplace)."""

    title: str
    url: str


class TicketTerms(Struct):
    """What an event allows and asks of its tickets after the sale."""

    personalization: PersonalizationPolicy | None = None
    fulfillment_starts_at: datetime | None = None
    transfers: TransferPolicy = TransferPolicy()
    secondary_sales: list[SaleChannel] = msgspec.field(default_factory=list)


class TicketTypePlan(Struct):
    name: str
    price_cents: int
    description: str | None = None
    early_bird_price_cents: int | None = None
    early_bird_end_date: datetime | None = None
    category: str = "standard"
    max_per_purchase: int = 10
    section_ids: list[int] = msgspec.field(default_factory=list)
    capacity: int | None = None


class TicketType(TicketTypePlan, frozen=True, kw_only=True):
    id: int


class OpeningHours(Struct):
    open: str
    close: str


# ---- events ------------------------------------------------------------------------------


class OrganizationRegistered(Event, frozen=True):
    organization_id: int
    slug: str
    name: str
    description: str | None
    image_url: str | None
    primary_color: str
    currency: str
    stripe_account_id: str | None
    fee: FeeRule
    # IANA zone of the organization's local days (a visit day ends at its local midnight).
    timezone: str = DEFAULT_TIMEZONE
    # Whether a refund gives back the service fee paid with the refunded tickets.
    refund_service_fee: bool = True


class EventScheduled(Event, frozen=True):
    event_id: int
    organization_id: int
    venue_id: int
    slug: str
    name: str
    description: str | None
    event_date: datetime
    event_end_date: datetime | None
    doors_open: datetime | None
    sales_start_date: datetime | None
    sales_end_date: datetime | None
    ticket_types: list[TicketType]
    terms: TicketTerms = TicketTerms()


class EventPublished(Event, frozen=True):
    event_id: int


class EventCancelled(Event, frozen=True):
    event_id: int
    reason: str | None = None


class AttractionOpened(Event, frozen=True):
    attraction_id: int
    organization_id: int
    venue_id: int
    slug: str
    name: str
    description: str | None
    visit_date_required: bool
    daily_max_tickets: int | None
    opening_hours: dict[str, OpeningHours]
    ticket_types: list[TicketType]


class SlugClaimed(Event, frozen=True):
    """First writer wins a natural key (an organization slug, an event slug within its
    organization, a discount code): the claim stream can only be created once."""

    kind: str
    key: str
    owner_id: int


# ---- commands ----------------------------------------------------------------------------


class RegisterOrganization(Struct):
    slug: str
    name: str
    currency: str
    description: str | None = None
    image_url: str | None = None
    primary_color: str = "#3B82F6"
    stripe_account_id: str | None = None
    fee: FeeRule = FeeRule()
    timezone: str = DEFAULT_TIMEZONE
    refund_service_fee: bool = True


class ScheduleEvent(Struct):
    slug: str
    name: str
    venue_id: int
    event_date: datetime
    ticket_types: list[TicketTypePlan]
    description: str | None = None
    event_end_date: datetime | None = None
    doors_open: datetime | None = None
    sales_start_date: datetime | None = None
    sales_end_date: datetime | None = None
    publish: bool = False
    terms: TicketTerms = TicketTerms()


class OpenAttraction(Struct):
    slug: str
    name: str
    venue_id: int
    ticket_types: list[TicketTypePlan]
    description: str | None = None
    visit_date_required: bool = False
    daily_max_tickets: int | None = None
    opening_hours: dict[str, OpeningHours] = msgspec.field(default_factory=dict)


# ---- state -------------------------------------------------------------------------------


class EventListing(msgspec.Struct, frozen=True, kw_only=True):
    """What the catalog knows of one event: enough to publish, cancel and sell it."""

    scheduled: EventScheduled
    status: Literal["draft", "published", "cancelled"] = "draft"


def evolve_listing(state: EventListing | None, event: Event) -> EventListing | None:
    match event:
        case EventScheduled():
            return EventListing(scheduled=event)
        case EventPublished() if state is not None:
            return msgspec.structs.replace(state, status="published")
        case EventCancelled() if state is not None:
            return msgspec.structs.replace(state, status="cancelled")
    return state


# ---- decisions ---------------------------------------------------------------------------


def register_organization(cmd: RegisterOrganization, organization_id: int) -> list[Event]:
    slug(cmd.slug)
    text(cmd.name, "name")
    require(bool(CURRENCY.match(cmd.currency)), "currency", "currency must be ISO-4217, e.g. DKK")
    require(bool(COLOR.match(cmd.primary_color)), "primary_color", "primary_color is #RRGGBB")
    require(0 <= cmd.fee.percent_bps <= 10_000, "fee.percent_bps", "fee is 0..10000 bps")
    require(cmd.fee.per_ticket_cents >= 0, "fee.per_ticket_cents", "fee must not be negative")
    require(_known_zone(cmd.timezone), "timezone", "timezone is an IANA zone, e.g. Europe/Oslo")
    return [
        OrganizationRegistered(
            organization_id=organization_id,
            slug=cmd.slug,
            name=cmd.name,
            description=cmd.description,
            image_url=cmd.image_url,
            primary_color=cmd.primary_color,
            currency=cmd.currency,
            stripe_account_id=cmd.stripe_account_id,
            fee=cmd.fee,
            timezone=cmd.timezone,
            refund_service_fee=cmd.refund_service_fee,
        )
    ]


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _ticket_types(
    plans: Sequence[TicketTypePlan], ids: Sequence[int], sections: dict[int, Section] | None
) -> list[TicketType]:
    """Validated ticket types; `sections` is the venue's map for an event (None: attraction)."""
    require(bool(plans), "ticket_types", "at least one ticket type is needed")
    require(len(ids) == len(plans), "ticket_types", "one id per ticket type")
    for i, plan in enumerate(plans):
        field = f"ticket_types[{i}]"
        text(plan.name, f"{field}.name")
        require(plan.price_cents >= 0, f"{field}.price_cents", "price must not be negative")
        require(
            1 <= plan.max_per_purchase <= MAX_PER_PURCHASE,
            f"{field}.max_per_purchase",
            f"max_per_purchase is 1..{MAX_PER_PURCHASE}",
        )
        require(
            (plan.early_bird_price_cents is None) == (plan.early_bird_end_date is None),
            f"{field}.early_bird_end_date",
            "an early-bird price needs an end date, and the other way round",
        )
        aware(plan.early_bird_end_date, f"{field}.early_bird_end_date")
        if plan.early_bird_price_cents is not None:
            require(
                0 <= plan.early_bird_price_cents <= plan.price_cents,
                f"{field}.early_bird_price_cents",
                "early-bird price must be between 0 and the price",
            )
        require(plan.capacity is None or plan.capacity >= 0, f"{field}.capacity", "capacity >= 0")
        if sections is None:
            require(not plan.section_ids, f"{field}.section_ids", "attractions have no seats")
            continue
        for sid in plan.section_ids:
            require(sid in sections, f"{field}.section_ids", f"section {sid} is not in the venue")
        standing = [sid for sid in plan.section_ids if sections[sid].seating_mode == "standing"]
        require(
            not plan.section_ids or not standing or len(standing) == len(plan.section_ids),
            f"{field}.section_ids",
            "a ticket type is either seated or standing, not both",
        )
        require(
            bool(plan.section_ids) or plan.capacity is not None,
            f"{field}.capacity",
            "a ticket type without sections needs a capacity",
        )
    return [
        TicketType(id=tid, **msgspec.structs.asdict(plan))
        for tid, plan in zip(ids, plans, strict=True)
    ]


def schedule_event(
    cmd: ScheduleEvent,
    organization_id: int,
    venue: VenueRegistered,
    event_id: int,
    ticket_type_ids: Sequence[int],
) -> list[Event]:
    slug(cmd.slug)
    text(cmd.name, "name")
    require(venue.organization_id == organization_id, "venue_id", "venue not found")
    for name in ("event_date", "event_end_date", "doors_open", "sales_start_date"):
        aware(getattr(cmd, name), name)
    aware(cmd.sales_end_date, "sales_end_date")
    if cmd.event_end_date is not None:
        require(cmd.event_end_date >= cmd.event_date, "event_end_date", "ends before it starts")
    if cmd.doors_open is not None:
        require(cmd.doors_open <= cmd.event_date, "doors_open", "doors open after the start")
    if cmd.sales_start_date is not None and cmd.sales_end_date is not None:
        require(
            cmd.sales_start_date < cmd.sales_end_date,
            "sales_end_date",
            "sales must end after they start",
        )
    sections = {s.id: s for s in venue.sections}
    scheduled = EventScheduled(
        event_id=event_id,
        organization_id=organization_id,
        venue_id=venue.venue_id,
        slug=cmd.slug,
        name=cmd.name,
        description=cmd.description,
        event_date=cmd.event_date,
        event_end_date=cmd.event_end_date,
        doors_open=cmd.doors_open,
        sales_start_date=cmd.sales_start_date,
        sales_end_date=cmd.sales_end_date,
        ticket_types=_ticket_types(cmd.ticket_types, ticket_type_ids, sections),
        terms=_terms(cmd.terms),
    )
    return [scheduled, EventPublished(event_id=event_id)] if cmd.publish else [scheduled]


def _terms(terms: TicketTerms) -> TicketTerms:
    policy = terms.personalization
    if policy is not None:
        aware(policy.starts_at, "terms.personalization.starts_at")
        aware(policy.ends_at, "terms.personalization.ends_at")
        require(bool(policy.required), "terms.personalization.required", "name a field")
        if policy.starts_at is not None and policy.ends_at is not None:
            require(
                policy.starts_at < policy.ends_at,
                "terms.personalization.ends_at",
                "the window must end after it starts",
            )
    aware(terms.fulfillment_starts_at, "terms.fulfillment_starts_at")
    aware(terms.transfers.closes_at, "terms.transfers.closes_at")
    for i, channel in enumerate(terms.secondary_sales):
        text(channel.title, f"terms.secondary_sales[{i}].title")
        require(
            channel.url.startswith(("https://", "http://")),
            f"terms.secondary_sales[{i}].url",
            "a channel's url is http(s)",
        )
    return terms


def publish_event(state: EventListing) -> list[Event]:
    if state.status == "published":
        return []
    require(state.status == "draft", "status", "a cancelled event cannot be published")
    return [EventPublished(event_id=state.scheduled.event_id)]


def cancel_event(state: EventListing, reason: str | None = None) -> list[Event]:
    if state.status == "cancelled":
        return []
    return [EventCancelled(event_id=state.scheduled.event_id, reason=reason)]


def open_attraction(
    cmd: OpenAttraction,
    organization_id: int,
    venue: VenueRegistered,
    attraction_id: int,
    ticket_type_ids: Sequence[int],
) -> list[Event]:
    slug(cmd.slug)
    text(cmd.name, "name")
    require(venue.organization_id == organization_id, "venue_id", "venue not found")
    require(
        cmd.daily_max_tickets is None or cmd.daily_max_tickets > 0,
        "daily_max_tickets",
        "daily_max_tickets must be positive",
    )
    for day, hours in cmd.opening_hours.items():
        require(day in WEEKDAYS, "opening_hours", f"unknown weekday {day!r}")
        require(
            bool(CLOCK.match(hours.open) and CLOCK.match(hours.close)) and hours.open < hours.close,
            f"opening_hours.{day}",
            "opening hours are HH:MM, open before close",
        )
    return [
        AttractionOpened(
            attraction_id=attraction_id,
            organization_id=organization_id,
            venue_id=venue.venue_id,
            slug=cmd.slug,
            name=cmd.name,
            description=cmd.description,
            visit_date_required=cmd.visit_date_required,
            daily_max_tickets=cmd.daily_max_tickets,
            opening_hours=cmd.opening_hours,
            ticket_types=_ticket_types(cmd.ticket_types, ticket_type_ids, None),
        )
    ]


def claim_stream(kind: str, key: str, organization_id: int | None = None) -> str:
    """`slug-org.det-ny-teater`, `slug-42.event.hamlet-2026`, `slug-42.discount.SPRING25`."""
    scope = "org" if organization_id is None else f"{organization_id}.{kind}"
    return f"slug-{scope}.{key}"
