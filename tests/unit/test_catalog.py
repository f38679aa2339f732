"""Catalog decisions: what a partner's malformed catalog data is refused with, and what the
accepted data records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import catalog, discounts, venues
from domain.catalog import RegisterOrganization, ScheduleEvent, TicketTypePlan
from domain.discounts import CreateDiscountCode
from domain.errors import InvalidCommand
from domain.venues import RegisterVenue, Row, SectionPlan

START = datetime(2026, 5, 1, 19, tzinfo=UTC)
HALL = SectionPlan(
    name="Sal", width=100.0, height=50.0, rows=[Row(identifier="A", start=1, end=20)]
)
FLOOR = SectionPlan(
    name="Gulv", seating_mode="standing", width=10.0, height=10.0, standing_capacity=50
)


def _venue() -> venues.VenueRegistered:
    (venue,) = venues.register_venue(
        RegisterVenue(key="sal", name="Sal", sections=[HALL, FLOOR]), 1, 2, [3, 4]
    )
    assert isinstance(venue, venues.VenueRegistered)
    return venue


def _refused(call, field: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        call()
    assert refused.value.field == field, refused.value.detail


def test_venue_capacity_counts_seats_and_standing_places() -> None:
    venue = _venue()
    assert [s.id for s in venue.sections] == [3, 4]
    assert sum(s.seated_capacity for s in venue.sections) == 20
    assert sum(s.standing_capacity for s in venue.sections) == 50


def test_arc_section_needs_its_radii() -> None:
    arc = SectionPlan(name="Balkon", section_type="arc", rows=HALL.rows, inner_radius=10.0)
    _refused(
        lambda: venues.register_venue(RegisterVenue(key="v", name="V", sections=[arc]), 1, 2, [3]),
        "sections[0].outer_radius",
    )


def test_row_with_seats_running_backwards_is_refused() -> None:
    bad = SectionPlan(name="S", width=1.0, height=1.0, rows=[Row(identifier="A", start=9, end=2)])
    _refused(
        lambda: venues.register_venue(RegisterVenue(key="v", name="V", sections=[bad]), 1, 2, [3]),
        "sections[0].rows[0].end",
    )


@pytest.mark.parametrize(
    ("section", "field"),
    [
        # A row of a trillion seats took gigabytes and a minute before anything was refused.
        (
            SectionPlan(
                name="S", width=1.0, height=1.0, rows=[Row(identifier="A", start=1, end=10**12)]
            ),
            "sections[0].rows[0].end",
        ),
        # A NUL or a lone surrogate failed the append with the database's traceback.
        (SectionPlan(name="Sal\x00", width=1.0, height=1.0, rows=HALL.rows), "sections[0].name"),
        (
            SectionPlan(
                name="S", width=1.0, height=1.0, rows=[Row(identifier="\ud800", start=1, end=2)]
            ),
            "sections[0].rows[0].identifier",
        ),
    ],
)
def test_a_section_no_plan_can_hold_is_refused(section: SectionPlan, field: str) -> None:
    _refused(
        lambda: venues.register_venue(
            RegisterVenue(key="v", name="V", sections=[section]), 1, 2, [3]
        ),
        field,
    )


def _event(**changes) -> ScheduleEvent:
    base = {
        "slug": "hamlet",
        "name": "Hamlet",
        "venue_id": 2,
        "event_date": START,
        "ticket_types": [TicketTypePlan(name="Voksen", price_cents=35000, section_ids=[3])],
    }
    return ScheduleEvent(**(base | changes))


def test_event_is_a_draft_until_published() -> None:
    events = catalog.schedule_event(_event(), 1, _venue(), 10, [11])
    state = None
    for e in events:
        state = catalog.evolve_listing(state, e)
    assert state is not None and state.status == "draft"
    for e in catalog.publish_event(state):
        state = catalog.evolve_listing(state, e)
    assert state.status == "published"
    assert catalog.publish_event(state) == []
    for e in catalog.cancel_event(state):
        state = catalog.evolve_listing(state, e)
    _refused(lambda: catalog.publish_event(state), "status")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slug": "Hamlet 2026"}, "slug"),
        ({"slug": "hamlet-2026\n"}, "slug"),
        ({"event_end_date": START - timedelta(hours=1)}, "event_end_date"),
        ({"doors_open": START + timedelta(minutes=5)}, "doors_open"),
        ({"event_date": datetime(2026, 5, 1, 19)}, "event_date"),
        (
            {"sales_start_date": START, "sales_end_date": START - timedelta(days=1)},
            "sales_end_date",
        ),
        (
            {"ticket_types": [TicketTypePlan(name="X", price_cents=1, section_ids=[99])]},
            "ticket_types[0].section_ids",
        ),
        (
            {"ticket_types": [TicketTypePlan(name="X", price_cents=1, section_ids=[3, 4])]},
            "ticket_types[0].section_ids",
        ),
        (
            {"ticket_types": [TicketTypePlan(name="X", price_cents=-1, section_ids=[3])]},
            "ticket_types[0].price_cents",
        ),
        (
            {"ticket_types": [TicketTypePlan(name="X", price_cents=1, max_per_purchase=21)]},
            "ticket_types[0].max_per_purchase",
        ),
        (
            {
                "ticket_types": [
                    TicketTypePlan(
                        name="X", price_cents=100, early_bird_price_cents=50, section_ids=[3]
                    )
                ]
            },
            "ticket_types[0].early_bird_end_date",
        ),
        ({"ticket_types": [TicketTypePlan(name="X", price_cents=1)]}, "ticket_types[0].capacity"),
    ],
)
def test_malformed_event_is_refused_naming_the_field(changes: dict, field: str) -> None:
    _refused(lambda: catalog.schedule_event(_event(**changes), 1, _venue(), 10, [11]), field)


def test_venue_of_another_organization_cannot_host_an_event() -> None:
    _refused(lambda: catalog.schedule_event(_event(), 99, _venue(), 10, [11]), "venue_id")


def test_discount_code_is_normalised_and_needs_exactly_one_kind_of_amount() -> None:
    (created,) = discounts.create_discount_code(
        CreateDiscountCode(code=" spring25 ", percentage=25, max_uses=500), 1, 5
    )
    assert isinstance(created, discounts.DiscountCodeCreated)
    assert created.code == "SPRING25"
    _refused(
        lambda: discounts.create_discount_code(
            CreateDiscountCode(code="BOTH", percentage=10, amount_cents=100), 1, 5
        ),
        "percentage",
    )
    _refused(
        lambda: discounts.create_discount_code(CreateDiscountCode(code="X", percentage=5), 1, 5),
        "code",
    )
    _refused(
        lambda: discounts.create_discount_code(
            CreateDiscountCode(code="NONE", percentage=5, applies_to_all=False), 1, 5
        ),
        "ticket_type_ids",
    )


def test_organization_currency_and_colour_are_checked() -> None:
    _refused(
        lambda: catalog.register_organization(
            RegisterOrganization(slug="x", name="X", currency="dkk"), 1
        ),
        "currency",
    )
    _refused(
        lambda: catalog.register_organization(
            RegisterOrganization(slug="x", name="X", currency="DKK", primary_color="blue"), 1
        ),
        "primary_color",
    )
    for currency, color in (("DKK\n", "#112233"), ("DKK", "#112233\n")):
        _refused(
            lambda currency=currency, color=color: catalog.register_organization(
                RegisterOrganization(slug="x", name="X", currency=currency, primary_color=color),
                1,
            ),
            "currency" if currency != "DKK" else "primary_color",
        )
