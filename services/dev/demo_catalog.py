"""The demo catalog, as the commands a partner would send: three organizations (the second
exists to prove isolation and has a free event, the third has no Stripe account, so its paid
purchases answer `503 payment_processing_unavailable`), an 840-seat theatre with arc-shaped
balconies, events around today, a museum whose ticket types hold more stock than its daily
capacity (so the day is what sells out) and discount codes. Dates are counted from the day the
demo is seeded, and an event names the sections of its venue as registered, so the commands
are built from those; services/dev/seed_demo.py sends them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from domain import venues
from domain.catalog import (
    FeeRule,
    OpenAttraction,
    OpeningHours,
    PersonalizationPolicy,
    RegisterOrganization,
    SaleChannel,
    ScheduleEvent,
    TicketTerms,
    TicketTypePlan,
)
from domain.discounts import CreateDiscountCode
from domain.venues import RegisterVenue, Row, SectionPlan

DEMO_ORGANIZATION = "det-ny-teater"
SECOND_ORGANIZATION = "aarhus-teater"
NO_STRIPE_ORGANIZATION = "odense-friscene"
FREE_EVENT = "aaben-proeve"
# The event whose tickets are personalized, handed out late and offered on a waiting list.
NAMED_EVENT = "en-folkefjende"
# The theatre's event that is cancelled once scheduled, and why.
CANCELLED_EVENT = "aflyst-gala"
CANCELLATION_REASON = "Aflyst af arrangøren"


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def _rows(letters: str, start: int, end: int) -> list[Row]:
    return [
        Row(identifier=c, start=start, end=end, row_position_y=i * 24.0)
        for i, c in enumerate(letters)
    ]


def _balcony(name: str, order: int, start_angle: float, seats: int) -> SectionPlan:
    """A ring segment above the Parterre: its inner radius clears the Parterre's top corners
    (439 from the centre), its outer edge stays inside the 1200x800 plan, and the Loge sits
    below the left balcony's reach."""
    return SectionPlan(
        name=name,
        display_order=order,
        section_type="arc",
        color="#F59E0B",
        position_x=600.0,
        position_y=620.0,
        inner_radius=470.0,
        outer_radius=600.0,
        start_angle=start_angle,
        end_angle=start_angle + 40.0,
        rows=_rows("ABCDEF", 1, seats),
    )


THEATRE_ORGANIZATION = RegisterOrganization(
    slug=DEMO_ORGANIZATION,
    name="Det Ny Teater",
    description="Klassiske og moderne forestillinger i hjertet af København.",
    image_url="https://cdn.linjerum.com/orgs/det-ny-teater.png",
    primary_color="#3B82F6",
    currency="DKK",
    stripe_account_id="acct_sim_detnyteater",
    fee=FeeRule(percent_bps=500),
)

THEATRE = RegisterVenue(
    key="det-ny-teater",
    name="Det Ny Teater",
    address="Gothersgade 8",
    city="København",
    zip_code="1123",
    sections=[
        SectionPlan(
            name="Parterre",
            position_x=300.0,
            position_y=300.0,
            width=600.0,
            height=400.0,
            rows=_rows("ABCDEFGHIJKLMNOP", 1, 24),
        ),
        _balcony("Balkon venstre", 1, 200.0, 20),
        _balcony("Balkon midte", 2, 250.0, 30),
        _balcony("Balkon højre", 3, 300.0, 20),
        SectionPlan(
            name="Loge",
            display_order=4,
            color="#A855F7",
            position_x=60.0,
            position_y=600.0,
            rotation=90.0,
            width=180.0,
            height=60.0,
            rows=_rows("AB", 1, 18),
        ),
    ],
)


def theatre_events(venue: venues.VenueRegistered, today: date) -> list[ScheduleEvent]:
    """Det Ny Teater's events: on sale, on sale later, a draft, and CANCELLED_EVENT. The
    venue's first five sections are THEATRE's: a plan change may have added more since (the
    next `make run` then stopped with a traceback)."""
    parterre, left, middle, right, loge = (s.id for s in venue.sections[:5])
    opening = _at(today + timedelta(days=30), 19)
    hamlet = ScheduleEvent(
        slug="hamlet-2026",
        name="Hamlet",
        description="Shakespeares tragedie om prinsen af Danmark.",
        venue_id=venue.venue_id,
        event_date=opening,
        event_end_date=opening + timedelta(hours=3),
        doors_open=opening - timedelta(minutes=30),
        sales_start_date=_at(today - timedelta(days=30), 0),
        sales_end_date=opening - timedelta(minutes=1),
        publish=True,
        ticket_types=[
            TicketTypePlan(
                name="Voksen",
                price_cents=35000,
                early_bird_price_cents=29000,
                early_bird_end_date=_at(today + timedelta(days=7), 0),
                max_per_purchase=8,
                section_ids=[parterre, middle],
            ),
            TicketTypePlan(
                name="Barn",
                description="Under 15 år",
                price_cents=17500,
                category="child",
                max_per_purchase=8,
                section_ids=[parterre, left, right],
            ),
            TicketTypePlan(
                name="Pensionist",
                price_cents=25000,
                category="senior",
                max_per_purchase=8,
                section_ids=[left, middle, right],
            ),
            TicketTypePlan(
                name="Loge",
                price_cents=55000,
                category="premium",
                max_per_purchase=4,
                section_ids=[loge],
            ),
        ],
    )
    later = _at(today + timedelta(days=75), 19, 30)
    cherry = ScheduleEvent(
        slug="kirsebaerhaven",
        name="Kirsebærhaven",
        description="Tjekhovs sidste skuespil.",
        venue_id=venue.venue_id,
        event_date=later,
        event_end_date=later + timedelta(hours=2, minutes=30),
        doors_open=later - timedelta(minutes=30),
        sales_start_date=_at(today + timedelta(days=14), 10),
        sales_end_date=later - timedelta(minutes=1),
        publish=True,
        ticket_types=[
            TicketTypePlan(name="Voksen", price_cents=32000, section_ids=[parterre, middle]),
        ],
    )
    draft = ScheduleEvent(
        slug="maagen",
        name="Mågen",
        venue_id=venue.venue_id,
        event_date=_at(today + timedelta(days=120), 19),
        ticket_types=[TicketTypePlan(name="Voksen", price_cents=30000, section_ids=[parterre])],
    )
    cancelled = ScheduleEvent(
        slug=CANCELLED_EVENT,
        name="Nytårsgala (aflyst)",
        venue_id=venue.venue_id,
        event_date=_at(today + timedelta(days=40), 20),
        publish=True,
        ticket_types=[TicketTypePlan(name="Voksen", price_cents=45000, section_ids=[parterre])],
    )
    return [hamlet, cherry, draft, cancelled]


MUSEUM = RegisterVenue(
    key="louisiana",
    name="Louisiana",
    address="Gl. Strandvej 13",
    city="Humlebæk",
    zip_code="3050",
    sections=[
        SectionPlan(
            name="Udstilling",
            seating_mode="standing",
            width=1000.0,
            height=600.0,
            standing_capacity=2000,
        )
    ],
)


def museum(venue_id: int) -> OpenAttraction:
    weekday = OpeningHours(open="11:00", close="22:00")
    weekend = OpeningHours(open="11:00", close="18:00")
    return OpenAttraction(
        slug="louisiana-museum",
        name="Louisiana Museum",
        description="Moderne kunst ved Øresund.",
        venue_id=venue_id,
        visit_date_required=True,
        daily_max_tickets=300,
        opening_hours={
            **{day: weekday for day in ("tue", "wed", "thu", "fri")},
            "sat": weekend,
            "sun": weekend,
        },
        ticket_types=[
            TicketTypePlan(name="Voksen", price_cents=15000, max_per_purchase=10, capacity=999),
            TicketTypePlan(
                name="Studerende",
                price_cents=11000,
                category="student",
                max_per_purchase=10,
                capacity=500,
            ),
        ],
    )


def discount_codes(today: date) -> list[CreateDiscountCode]:
    """Codes valid now, later, and no longer."""
    return [
        CreateDiscountCode(
            code="SPRING25",
            percentage=25,
            valid_until=_at(today + timedelta(days=60), 0),
            max_uses=500,
        ),
        CreateDiscountCode(code="FAST50", amount_cents=5000, max_uses=100),
        CreateDiscountCode(
            code="SOMMER10", percentage=10, valid_from=_at(today + timedelta(days=90), 0)
        ),
        CreateDiscountCode(
            code="VINTER10",
            percentage=10,
            valid_from=_at(today - timedelta(days=90), 0),
            valid_until=_at(today - timedelta(days=1), 0),
        ),
    ]


AARHUS_ORGANIZATION = RegisterOrganization(
    slug=SECOND_ORGANIZATION,
    name="Aarhus Teater",
    currency="DKK",
    primary_color="#DC2626",
    stripe_account_id="acct_sim_aarhusteater",
    fee=FeeRule(per_ticket_cents=1000),
)

AARHUS_STAGE = RegisterVenue(
    key="store-scene",
    name="Aarhus Teater, Store Scene",
    address="Teatergaden 1",
    city="Aarhus",
    zip_code="8000",
    sections=[
        SectionPlan(name="Salen", width=800.0, height=500.0, rows=_rows("ABCDEFGHIJ", 1, 20))
    ],
)


def _premiere_terms(premiere: datetime) -> TicketTerms:
    """Named tickets for the premiere: each holder gives name, e-mail and date of birth until
    the day before; tickets (PDFs, e-ticket links, wallet passes) are handed out three days
    before it, and may be offered on the theatre's waiting list."""
    return TicketTerms(
        personalization=PersonalizationPolicy(
            required=["first_name", "last_name", "email", "date_of_birth"],
            ends_at=premiere - timedelta(days=1),
        ),
        fulfillment_starts_at=premiere - timedelta(days=3),
        secondary_sales=[SaleChannel(title="Venteliste", url="https://aarhusteater.dk/venteliste")],
    )


def aarhus_events(stage: venues.VenueRegistered, today: date) -> list[ScheduleEvent]:
    """Aarhus Teater's events: NAMED_EVENT's premiere and FREE_EVENT's open rehearsal."""
    premiere = _at(today + timedelta(days=20), 19, 30)
    enemy = ScheduleEvent(
        slug=NAMED_EVENT,
        name="En folkefjende",
        venue_id=stage.venue_id,
        event_date=premiere,
        event_end_date=premiere + timedelta(hours=2),
        sales_start_date=_at(today - timedelta(days=10), 9),
        sales_end_date=premiere,
        publish=True,
        ticket_types=[
            TicketTypePlan(
                name="Voksen", price_cents=30000, section_ids=[s.id for s in stage.sections]
            )
        ],
        terms=_premiere_terms(premiere),
    )
    rehearsal = _at(today + timedelta(days=12), 17)
    free = ScheduleEvent(
        slug=FREE_EVENT,
        name="Åben prøve",
        description="Gratis generalprøve: billetten er gratis, men skal bestilles.",
        venue_id=stage.venue_id,
        event_date=rehearsal,
        event_end_date=rehearsal + timedelta(hours=2),
        sales_start_date=_at(today - timedelta(days=10), 9),
        sales_end_date=rehearsal,
        publish=True,
        ticket_types=[
            TicketTypePlan(
                name="Gratis", price_cents=0, max_per_purchase=4, section_ids=[stage.sections[0].id]
            )
        ],
    )
    return [enemy, free]


# An organization that has not connected Stripe yet: it can list and price, but a paid
# purchase is refused with 503 payment_processing_unavailable.
NO_STRIPE = RegisterOrganization(
    slug=NO_STRIPE_ORGANIZATION,
    name="Odense Friscene",
    currency="DKK",
    primary_color="#059669",
    stripe_account_id=None,
)

FRISCENEN = RegisterVenue(
    key="friscenen",
    name="Friscenen",
    city="Odense",
    sections=[
        SectionPlan(
            name="Gulv",
            seating_mode="standing",
            width=400.0,
            height=300.0,
            standing_capacity=150,
        )
    ],
)


def concert(venue: venues.VenueRegistered, today: date) -> ScheduleEvent:
    night = _at(today + timedelta(days=25), 20)
    return ScheduleEvent(
        slug="koncert-friscenen",
        name="Koncert på Friscenen",
        venue_id=venue.venue_id,
        event_date=night,
        event_end_date=night + timedelta(hours=2),
        sales_start_date=_at(today - timedelta(days=5), 9),
        sales_end_date=night,
        publish=True,
        ticket_types=[
            TicketTypePlan(name="Ståplads", price_cents=12000, section_ids=[venue.sections[0].id])
        ],
    )
