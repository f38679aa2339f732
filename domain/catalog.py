"""The catalog: organizations, venues with their seat maps, events, ticket types, attractions
and discount codes. Each is event-sourced; the functions here validate a command and return the
events that record it, so the rules live in one place and replay needs nothing else."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from domain.errors import InvalidCommand
from domain.events import Event

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
DISCOUNT_CODE = re.compile(r"^[A-Z0-9_-]{3,40}$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_PER_PURCHASE = 20
# The zone of organizations registered before they named one: the demo's and the first
# partner's (the ticket PDFs printed this zone's times already).
DEFAULT_TIMEZONE = "Europe/Copenhagen"


class Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Value types of the catalog: immutable, strict about unknown fields."""


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
    secondary_sales: list[SaleChannel] = []


class Row(Struct):
    identifier: str
    start: int
    end: int
    row_offset_x: float = 0.0
    row_position_y: float = 0.0

    @property
    def seat_count(self) -> int:
        return self.end - self.start + 1


class SectionPlan(Struct):
    """A section as drawn on the floor plan: a rectangle or a ring segment (arc), seated rows
    or a standing area with a capacity."""

    name: str
    display_order: int = 0
    seating_mode: Literal["seated", "standing"] = "seated"
    section_type: Literal["rectangle", "arc"] = "rectangle"
    color: str = "#3B82F6"
    position_x: float = 0.0
    position_y: float = 0.0
    rotation: float = 0.0
    width: float | None = None
    height: float | None = None
    inner_radius: float | None = None
    outer_radius: float | None = None
    start_angle: float | None = None
    end_angle: float | None = None
    rows: list[Row] = []
    standing_capacity: int = 0


class Section(SectionPlan, frozen=True, kw_only=True):
    id: int

    @property
    def seated_capacity(self) -> int:
        if self.seating_mode != "seated":
            return 0
        return sum(row.seat_count for row in self.rows)


class TicketTypePlan(Struct):
    name: str
    price_cents: int
    description: str | None = None
    early_bird_price_cents: int | None = None
    early_bird_end_date: datetime | None = None
    category: str = "standard"
    max_per_purchase: int = 10
    section_ids: list[int] = []
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


class VenueRegistered(Event, frozen=True):
    venue_id: int
    organization_id: int
    key: str
    name: str
    address: str | None
    city: str | None
    zip_code: str | None
    floor_plan_width: int
    floor_plan_height: int
    sections: list[Section]


class VenuePlanChanged(Event, frozen=True):
    """The venue's sections from now on: the whole plan, so a replay needs no earlier one."""

    venue_id: int
    sections: list[Section]


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


class DiscountCodeCreated(Event, frozen=True):
    discount_id: int
    organization_id: int
    code: str
    percentage: int | None
    amount_cents: int | None
    applies_to_all: bool
    ticket_type_ids: list[int]
    valid_from: datetime | None
    valid_until: datetime | None
    max_uses: int | None


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


class RegisterVenue(Struct):
    key: str
    name: str
    sections: list[SectionPlan]
    address: str | None = None
    city: str | None = None
    zip_code: str | None = None
    floor_plan_width: int = 1200
    floor_plan_height: int = 800


class PlannedSection(SectionPlan, frozen=True, kw_only=True):
    """A section of a changed plan: `id` keeps one of the venue's sections (the ticket types
    that name it still do), none adds a new one."""

    id: int | None = None


class ChangeSeatPlan(Struct):
    sections: list[PlannedSection]


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
    opening_hours: dict[str, OpeningHours] = {}


class CreateDiscountCode(Struct):
    code: str
    percentage: int | None = None
    amount_cents: int | None = None
    applies_to_all: bool = True
    ticket_type_ids: list[int] = []
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    max_uses: int | None = None


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


def _require(condition: bool, field: str, detail: str) -> None:
    if not condition:
        raise InvalidCommand(detail, field)


def _aware(value: datetime | None, field: str) -> None:
    _require(value is None or value.tzinfo is not None, field, f"{field} must carry a timezone")


def _text(value: str, field: str, limit: int = 200) -> None:
    _require(bool(value.strip()), field, f"{field} must not be empty")
    _require(len(value) <= limit, field, f"{field} is longer than {limit} characters")


def _slug(value: str, field: str = "slug") -> None:
    _require(
        bool(SLUG.match(value)) and len(value) <= 100,
        field,
        f"{field} must be lowercase letters, digits and single hyphens",
    )


def register_organization(cmd: RegisterOrganization, organization_id: int) -> list[Event]:
    _slug(cmd.slug)
    _text(cmd.name, "name")
    _require(bool(CURRENCY.match(cmd.currency)), "currency", "currency must be ISO-4217, e.g. DKK")
    _require(bool(COLOR.match(cmd.primary_color)), "primary_color", "primary_color is #RRGGBB")
    _require(0 <= cmd.fee.percent_bps <= 10_000, "fee.percent_bps", "fee is 0..10000 bps")
    _require(cmd.fee.per_ticket_cents >= 0, "fee.per_ticket_cents", "fee must not be negative")
    _require(_known_zone(cmd.timezone), "timezone", "timezone is an IANA zone, e.g. Europe/Oslo")
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


def _check_section(section: SectionPlan, field: str) -> None:
    _text(section.name, f"{field}.name")
    _require(bool(COLOR.match(section.color)), f"{field}.color", "color is #RRGGBB")
    if section.section_type == "arc":
        for name in ("inner_radius", "outer_radius", "start_angle", "end_angle"):
            _require(getattr(section, name) is not None, f"{field}.{name}", "arc needs " + name)
        assert section.inner_radius is not None and section.outer_radius is not None
        _require(
            0 <= section.inner_radius < section.outer_radius,
            f"{field}.outer_radius",
            "outer_radius must exceed inner_radius",
        )
    else:
        for name in ("width", "height"):
            value = getattr(section, name)
            _require(value is not None and value > 0, f"{field}.{name}", f"{name} must be > 0")
    if section.seating_mode == "standing":
        _require(not section.rows, f"{field}.rows", "a standing section has no rows")
        _require(
            section.standing_capacity > 0,
            f"{field}.standing_capacity",
            "a standing section needs a capacity",
        )
        return
    _require(bool(section.rows), f"{field}.rows", "a seated section needs rows")
    seen: set[str] = set()
    for i, row in enumerate(section.rows):
        _text(row.identifier, f"{field}.rows[{i}].identifier", 10)
        _require(row.identifier not in seen, f"{field}.rows[{i}].identifier", "duplicate row")
        _require(1 <= row.start <= row.end, f"{field}.rows[{i}].end", "seats run start..end")
        seen.add(row.identifier)


def register_venue(
    cmd: RegisterVenue, organization_id: int, venue_id: int, section_ids: Sequence[int]
) -> list[Event]:
    """`section_ids` are freshly allocated ids, one per section of the plan, in order."""
    _slug(cmd.key, "key")
    _text(cmd.name, "name")
    _require(bool(cmd.sections), "sections", "a venue needs at least one section")
    _require(len(section_ids) == len(cmd.sections), "sections", "one id per section")
    for i, section in enumerate(cmd.sections):
        _check_section(section, f"sections[{i}]")
    sections = [
        Section(id=sid, **msgspec.structs.asdict(plan))
        for sid, plan in zip(section_ids, cmd.sections, strict=True)
    ]
    return [
        VenueRegistered(
            venue_id=venue_id,
            organization_id=organization_id,
            key=cmd.key,
            name=cmd.name,
            address=cmd.address,
            city=cmd.city,
            zip_code=cmd.zip_code,
            floor_plan_width=cmd.floor_plan_width,
            floor_plan_height=cmd.floor_plan_height,
            sections=sections,
        )
    ]


def evolve_venue(state: VenueRegistered | None, event: Event) -> VenueRegistered | None:
    """The venue as registered, with its latest plan."""
    if isinstance(event, VenueRegistered):
        return event
    if isinstance(event, VenuePlanChanged) and state is not None:
        return msgspec.structs.replace(state, sections=event.sections)
    return state


SeatKey = tuple[int, str, int]  # section id, row, seat number


def _seats(section: Section) -> set[SeatKey]:
    return {
        (section.id, row.identifier, n)
        for row in section.rows
        for n in range(row.start, row.end + 1)
    }


def change_seat_plan(
    cmd: ChangeSeatPlan,
    venue: VenueRegistered,
    new_ids: Sequence[int],
    taken: Collection[SeatKey] = (),
) -> list[Event]:
    """`new_ids`: freshly allocated ids for the sections without one, in order. `taken`: the
    seats held or sold for the venue's events, which the new plan must still have."""
    _require(bool(cmd.sections), "sections", "a venue needs at least one section")
    known = {s.id for s in venue.sections}
    kept = [s.id for s in cmd.sections if s.id is not None]
    _require(len(kept) == len(set(kept)), "sections", "a section id appears twice")
    fresh = iter(new_ids)
    sections = []
    for i, planned in enumerate(cmd.sections):
        field = f"sections[{i}]"
        _check_section(planned, field)
        _require(planned.id is None or planned.id in known, f"{field}.id", "not this venue's")
        plan = msgspec.structs.asdict(planned)
        sid = plan.pop("id")
        sections.append(Section(id=next(fresh) if sid is None else sid, **plan))
    _require(next(fresh, None) is None, "sections", "one new id per new section")
    seats = set().union(*(_seats(s) for s in sections))
    lost = sorted(seat for seat in taken if seat not in seats)
    _require(
        not lost,
        "sections",
        f"{len(lost)} seats already held or sold are not in the new plan (first: {lost[:1]})",
    )
    if sections == venue.sections:
        return []
    return [VenuePlanChanged(venue_id=venue.venue_id, sections=sections)]


def _ticket_types(
    plans: Sequence[TicketTypePlan], ids: Sequence[int], sections: dict[int, Section] | None
) -> list[TicketType]:
    """Validated ticket types; `sections` is the venue's map for an event (None: attraction)."""
    _require(bool(plans), "ticket_types", "at least one ticket type is needed")
    _require(len(ids) == len(plans), "ticket_types", "one id per ticket type")
    for i, plan in enumerate(plans):
        field = f"ticket_types[{i}]"
        _text(plan.name, f"{field}.name")
        _require(plan.price_cents >= 0, f"{field}.price_cents", "price must not be negative")
        _require(
            1 <= plan.max_per_purchase <= MAX_PER_PURCHASE,
            f"{field}.max_per_purchase",
            f"max_per_purchase is 1..{MAX_PER_PURCHASE}",
        )
        _require(
            (plan.early_bird_price_cents is None) == (plan.early_bird_end_date is None),
            f"{field}.early_bird_end_date",
            "an early-bird price needs an end date, and the other way round",
        )
        _aware(plan.early_bird_end_date, f"{field}.early_bird_end_date")
        if plan.early_bird_price_cents is not None:
            _require(
                0 <= plan.early_bird_price_cents <= plan.price_cents,
                f"{field}.early_bird_price_cents",
                "early-bird price must be between 0 and the price",
            )
        _require(plan.capacity is None or plan.capacity >= 0, f"{field}.capacity", "capacity >= 0")
        if sections is None:
            _require(not plan.section_ids, f"{field}.section_ids", "attractions have no seats")
            continue
        for sid in plan.section_ids:
            _require(sid in sections, f"{field}.section_ids", f"section {sid} is not in the venue")
        standing = [sid for sid in plan.section_ids if sections[sid].seating_mode == "standing"]
        _require(
            not plan.section_ids or not standing or len(standing) == len(plan.section_ids),
            f"{field}.section_ids",
            "a ticket type is either seated or standing, not both",
        )
        _require(
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
    _slug(cmd.slug)
    _text(cmd.name, "name")
    _require(venue.organization_id == organization_id, "venue_id", "venue not found")
    for name in ("event_date", "event_end_date", "doors_open", "sales_start_date"):
        _aware(getattr(cmd, name), name)
    _aware(cmd.sales_end_date, "sales_end_date")
    if cmd.event_end_date is not None:
        _require(cmd.event_end_date >= cmd.event_date, "event_end_date", "ends before it starts")
    if cmd.doors_open is not None:
        _require(cmd.doors_open <= cmd.event_date, "doors_open", "doors open after the start")
    if cmd.sales_start_date is not None and cmd.sales_end_date is not None:
        _require(
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
        _aware(policy.starts_at, "terms.personalization.starts_at")
        _aware(policy.ends_at, "terms.personalization.ends_at")
        _require(bool(policy.required), "terms.personalization.required", "name a field")
        if policy.starts_at is not None and policy.ends_at is not None:
            _require(
                policy.starts_at < policy.ends_at,
                "terms.personalization.ends_at",
                "the window must end after it starts",
            )
    _aware(terms.fulfillment_starts_at, "terms.fulfillment_starts_at")
    _aware(terms.transfers.closes_at, "terms.transfers.closes_at")
    for i, channel in enumerate(terms.secondary_sales):
        _text(channel.title, f"terms.secondary_sales[{i}].title")
        _require(
            channel.url.startswith(("https://", "http://")),
            f"terms.secondary_sales[{i}].url",
            "a channel's url is http(s)",
        )
    return terms


def publish_event(state: EventListing) -> list[Event]:
    if state.status == "published":
        return []
    _require(state.status == "draft", "status", "a cancelled event cannot be published")
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
    _slug(cmd.slug)
    _text(cmd.name, "name")
    _require(venue.organization_id == organization_id, "venue_id", "venue not found")
    _require(
        cmd.daily_max_tickets is None or cmd.daily_max_tickets > 0,
        "daily_max_tickets",
        "daily_max_tickets must be positive",
    )
    for day, hours in cmd.opening_hours.items():
        _require(day in WEEKDAYS, "opening_hours", f"unknown weekday {day!r}")
        _require(
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


def create_discount_code(
    cmd: CreateDiscountCode, organization_id: int, discount_id: int
) -> list[Event]:
    code = cmd.code.strip().upper()
    _require(bool(DISCOUNT_CODE.match(code)), "code", "code is 3-40 letters, digits, - or _")
    _require(
        (cmd.percentage is None) != (cmd.amount_cents is None),
        "percentage",
        "give exactly one of percentage and amount_cents",
    )
    _require(
        cmd.percentage is None or 1 <= cmd.percentage <= 100, "percentage", "percentage is 1..100"
    )
    _require(cmd.amount_cents is None or cmd.amount_cents > 0, "amount_cents", "amount must be > 0")
    _require(
        cmd.applies_to_all or bool(cmd.ticket_type_ids),
        "ticket_type_ids",
        "name the ticket types or set applies_to_all",
    )
    _require(cmd.max_uses is None or cmd.max_uses > 0, "max_uses", "max_uses must be positive")
    _aware(cmd.valid_from, "valid_from")
    _aware(cmd.valid_until, "valid_until")
    if cmd.valid_from is not None and cmd.valid_until is not None:
        _require(cmd.valid_from < cmd.valid_until, "valid_until", "valid_until before valid_from")
    return [
        DiscountCodeCreated(
            discount_id=discount_id,
            organization_id=organization_id,
            code=code,
            percentage=cmd.percentage,
            amount_cents=cmd.amount_cents,
            applies_to_all=cmd.applies_to_all,
            ticket_type_ids=[] if cmd.applies_to_all else list(cmd.ticket_type_ids),
            valid_from=cmd.valid_from,
            valid_until=cmd.valid_until,
            max_uses=cmd.max_uses,
        )
    ]


def claim_stream(kind: str, key: str, organization_id: int | None = None) -> str:
    """`slug-org.det-ny-teater`, `slug-42.event.hamlet-2026`, `slug-42.discount.SPRING25`."""
    scope = "org" if organization_id is None else f"{organization_id}.{kind}"
    return f"slug-{scope}.{key}"
