"""Catalog decisions beyond tests/unit/test_catalog.py: what each accepted registration records,
and every refusal of malformed organizations, venues, events, attractions and discount codes,
each naming the field a partner's form should point at."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from domain import catalog, discounts, venues
from domain.catalog import (
    AttractionOpened,
    EventCancelled,
    EventPublished,
    EventScheduled,
    FeeRule,
    OpenAttraction,
    OpeningHours,
    OrganizationRegistered,
    RegisterOrganization,
    ScheduleEvent,
    TicketType,
    TicketTypePlan,
)
from domain.discounts import CreateDiscountCode, DiscountCodeCreated
from domain.errors import InvalidCommand
from domain.events import Event
from domain.venues import RegisterVenue, Row, SectionPlan, VenueRegistered
from tests.unit.builders import FLOOR, HALL, NOW, SHOW_STARTS, apply, refused, venue

NAIVE = datetime(2026, 5, 1, 19)
SEATED = SectionPlan(
    name="Sal", width=100.0, height=50.0, rows=[Row(identifier="A", start=1, end=20)]
)
STANDING = SectionPlan(
    name="Gulv", seating_mode="standing", width=10.0, height=10.0, standing_capacity=50
)
ARC = SectionPlan(
    name="Balkon",
    section_type="arc",
    inner_radius=10.0,
    outer_radius=20.0,
    start_angle=0.0,
    end_angle=90.0,
    rows=[Row(identifier="A", start=1, end=8)],
)


def _refused(decide: Callable[[], list[Event]], field: str) -> None:
    with refused(InvalidCommand, "invalid_request", field):
        decide()


# ---- organizations ---------------------------------------------------------------------------


def _organization(**changes: Any) -> RegisterOrganization:
    return RegisterOrganization(
        **({"slug": "det-ny", "name": "Det Ny", "currency": "DKK"} | changes)
    )


def test_an_organization_is_registered_with_its_fee_and_zone() -> None:
    fee = FeeRule(percent_bps=500, per_ticket_cents=300)
    assert catalog.register_organization(_organization(fee=fee, timezone="Europe/Oslo"), 4) == [
        OrganizationRegistered(
            organization_id=4,
            slug="det-ny",
            name="Det Ny",
            description=None,
            image_url=None,
            primary_color="#3B82F6",
            currency="DKK",
            stripe_account_id=None,
            fee=fee,
            timezone="Europe/Oslo",
        )
    ]
    [registered] = catalog.register_organization(_organization(), 4)
    assert isinstance(registered, OrganizationRegistered)
    assert registered.timezone == catalog.DEFAULT_TIMEZONE


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slug": "Det Ny"}, "slug"),
        ({"slug": "det--ny"}, "slug"),
        ({"slug": "a" * 101}, "slug"),
        ({"name": "  "}, "name"),
        ({"name": "N" * 201}, "name"),
        ({"fee": FeeRule(percent_bps=10_001)}, "fee.percent_bps"),
        ({"fee": FeeRule(percent_bps=-1)}, "fee.percent_bps"),
        ({"fee": FeeRule(per_ticket_cents=-1)}, "fee.per_ticket_cents"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../etc"}, "timezone"),
    ],
)
def test_a_malformed_organization_is_refused_naming_the_field(changes: dict, field: str) -> None:
    _refused(lambda: catalog.register_organization(_organization(**changes), 4), field)


# ---- venues ----------------------------------------------------------------------------------


def test_a_venue_gives_each_section_of_its_plan_the_id_allocated_for_it() -> None:
    [registered] = venues.register_venue(
        RegisterVenue(key="sal", name="Sal", sections=[SEATED, ARC, STANDING]), 1, 2, [7, 8, 9]
    )
    assert isinstance(registered, VenueRegistered)
    assert (registered.venue_id, registered.organization_id) == (2, 1)
    assert [(s.id, s.name, s.seated_capacity) for s in registered.sections] == [
        (7, "Sal", 20),
        (8, "Balkon", 8),
        (9, "Gulv", 0),
    ]
    assert registered.sections[1].inner_radius == 10.0


def _section(plan: SectionPlan = SEATED, **changes: Any) -> SectionPlan:
    return msgspec.structs.replace(plan, **changes)


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ([], "sections"),
        ([SEATED, _section(name=" ")], "sections[1].name"),
        ([_section(color="red")], "sections[0].color"),
        ([_section(width=None)], "sections[0].width"),
        ([_section(height=0.0)], "sections[0].height"),
        ([_section(ARC, start_angle=None)], "sections[0].start_angle"),
        ([_section(ARC, inner_radius=20.0)], "sections[0].outer_radius"),
        ([_section(STANDING, rows=SEATED.rows)], "sections[0].rows"),
        ([_section(STANDING, standing_capacity=0)], "sections[0].standing_capacity"),
        ([_section(rows=[])], "sections[0].rows"),
        ([_section(rows=[*SEATED.rows, *SEATED.rows])], "sections[0].rows[1].identifier"),
        ([_section(rows=[Row(identifier="", start=1, end=2)])], "sections[0].rows[0].identifier"),
        (
            [_section(rows=[Row(identifier="R" * 11, start=1, end=2)])],
            "sections[0].rows[0].identifier",
        ),
        ([_section(rows=[Row(identifier="A", start=0, end=2)])], "sections[0].rows[0].end"),
    ],
)
def test_a_malformed_seat_map_is_refused_naming_the_field(
    sections: list[SectionPlan], field: str
) -> None:
    ids = list(range(10, 10 + len(sections)))
    _refused(
        lambda: venues.register_venue(
            RegisterVenue(key="v", name="V", sections=sections), 1, 2, ids
        ),
        field,
    )


@pytest.mark.parametrize(
    ("changes", "ids", "field"),
    [
        ({"key": "Store Scene"}, [10], "key"),
        ({"name": ""}, [10], "name"),
        ({}, [10, 11], "sections"),
    ],
)
def test_a_venue_needs_a_key_a_name_and_one_id_per_section(
    changes: dict, ids: list[int], field: str
) -> None:
    cmd = RegisterVenue(**({"key": "v", "name": "V", "sections": [SEATED]} | changes))
    _refused(lambda: venues.register_venue(cmd, 1, 2, ids), field)


# ---- events ----------------------------------------------------------------------------------


def _plan(**changes: Any) -> TicketTypePlan:
    return TicketTypePlan(
        **({"name": "Voksen", "price_cents": 35000, "section_ids": [HALL]} | changes)
    )


def _event(**changes: Any) -> ScheduleEvent:
    base: dict[str, Any] = {
        "slug": "hamlet",
        "name": "Hamlet",
        "venue_id": 2,
        "event_date": SHOW_STARTS,
        "ticket_types": [_plan(), _plan(name="Ståplads", section_ids=[FLOOR])],
    }
    return ScheduleEvent(**(base | changes))


def test_an_event_scheduled_to_be_published_is_on_sale_from_its_append() -> None:
    events = catalog.schedule_event(_event(publish=True), 1, venue(), 3, [45, 46])
    scheduled, published = events
    assert published == EventPublished(event_id=3)
    assert isinstance(scheduled, EventScheduled)
    assert (scheduled.event_id, scheduled.venue_id, scheduled.organization_id) == (3, 2, 1)
    assert scheduled.ticket_types == [
        TicketType(id=45, name="Voksen", price_cents=35000, section_ids=[HALL]),
        TicketType(id=46, name="Ståplads", price_cents=35000, section_ids=[FLOOR]),
    ]
    listing = apply(catalog.evolve_listing, None, events)
    assert listing is not None and listing.status == "published"


def test_cancelling_an_event_records_why_once() -> None:
    listing = apply(
        catalog.evolve_listing, None, catalog.schedule_event(_event(), 1, venue(), 3, [45, 46])
    )
    assert listing is not None
    cancelled = catalog.cancel_event(listing, "illness")
    assert cancelled == [EventCancelled(event_id=3, reason="illness")]
    listing = apply(catalog.evolve_listing, listing, cancelled)
    assert listing is not None and listing.status == "cancelled"
    assert catalog.cancel_event(listing, "again") == []


@pytest.mark.parametrize(
    ("changes", "ids", "field"),
    [
        ({"name": " "}, [45, 46], "name"),
        ({"sales_end_date": NAIVE}, [45, 46], "sales_end_date"),
        ({"doors_open": NAIVE}, [45, 46], "doors_open"),
        ({"ticket_types": []}, [], "ticket_types"),
        ({}, [45], "ticket_types"),
        ({"ticket_types": [_plan(name="")]}, [45], "ticket_types[0].name"),
        ({"ticket_types": [_plan(max_per_purchase=0)]}, [45], "ticket_types[0].max_per_purchase"),
        ({"ticket_types": [_plan(capacity=-1)]}, [45], "ticket_types[0].capacity"),
        (
            {"ticket_types": [_plan(early_bird_end_date=SHOW_STARTS)]},
            [45],
            "ticket_types[0].early_bird_end_date",
        ),
        (
            {"ticket_types": [_plan(early_bird_price_cents=100, early_bird_end_date=NAIVE)]},
            [45],
            "ticket_types[0].early_bird_end_date",
        ),
        (
            {"ticket_types": [_plan(early_bird_price_cents=40000, early_bird_end_date=NOW)]},
            [45],
            "ticket_types[0].early_bird_price_cents",
        ),
    ],
)
def test_a_malformed_event_is_refused_naming_the_field(
    changes: dict, ids: list[int], field: str
) -> None:
    _refused(lambda: catalog.schedule_event(_event(**changes), 1, venue(), 3, ids), field)


# ---- attractions -----------------------------------------------------------------------------


def _attraction(**changes: Any) -> OpenAttraction:
    base: dict[str, Any] = {
        "slug": "museum",
        "name": "Museum",
        "venue_id": 2,
        "ticket_types": [_plan(section_ids=[])],
    }
    return OpenAttraction(**(base | changes))


def test_an_attraction_opens_with_its_hours_and_uncapped_types() -> None:
    hours = {"sat": OpeningHours(open="10:00", close="17:30")}
    cmd = _attraction(opening_hours=hours, visit_date_required=True, daily_max_tickets=300)
    assert catalog.open_attraction(cmd, 1, venue(), 5, [7]) == [
        AttractionOpened(
            attraction_id=5,
            organization_id=1,
            venue_id=2,
            slug="museum",
            name="Museum",
            description=None,
            visit_date_required=True,
            daily_max_tickets=300,
            opening_hours=hours,
            ticket_types=[TicketType(id=7, name="Voksen", price_cents=35000)],
        )
    ]


@pytest.mark.parametrize(
    ("changes", "organization_id", "field"),
    [
        ({"slug": "Museum"}, 1, "slug"),
        ({}, 99, "venue_id"),
        ({"daily_max_tickets": 0}, 1, "daily_max_tickets"),
        (
            {"opening_hours": {"monday": OpeningHours(open="10:00", close="17:00")}},
            1,
            "opening_hours",
        ),
        (
            {"opening_hours": {"mon": OpeningHours(open="10:00", close="24:00")}},
            1,
            "opening_hours.mon",
        ),
        (
            {"opening_hours": {"tue": OpeningHours(open="9:00", close="17:00")}},
            1,
            "opening_hours.tue",
        ),
        (
            {"opening_hours": {"wed": OpeningHours(open="17:00", close="10:00")}},
            1,
            "opening_hours.wed",
        ),
        ({"ticket_types": [_plan()]}, 1, "ticket_types[0].section_ids"),
        ({"ticket_types": []}, 1, "ticket_types"),
    ],
)
def test_a_malformed_attraction_is_refused_naming_the_field(
    changes: dict, organization_id: int, field: str
) -> None:
    _refused(
        lambda: catalog.open_attraction(_attraction(**changes), organization_id, venue(), 5, [7]),
        field,
    )


# ---- discount codes --------------------------------------------------------------------------


def test_a_fixed_amount_code_for_some_types_keeps_them_and_one_for_all_drops_them() -> None:
    window = {"valid_from": NOW, "valid_until": NOW + timedelta(days=30)}
    [limited] = discounts.create_discount_code(
        CreateDiscountCode(
            code="vip_2026", amount_cents=5000, applies_to_all=False, ticket_type_ids=[45], **window
        ),
        1,
        9,
    )
    assert limited == DiscountCodeCreated(
        discount_id=9,
        organization_id=1,
        code="VIP_2026",
        percentage=None,
        amount_cents=5000,
        applies_to_all=False,
        ticket_type_ids=[45],
        max_uses=None,
        **window,
    )
    [everyone] = discounts.create_discount_code(
        CreateDiscountCode(code="ALL", percentage=100, ticket_type_ids=[45]), 1, 9
    )
    assert isinstance(everyone, DiscountCodeCreated)
    assert (everyone.applies_to_all, everyone.ticket_type_ids) == (True, [])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"code": "C" * 41}, "code"),
        ({"code": "SPRING 25"}, "code"),
        ({"percentage": None}, "percentage"),
        ({"percentage": 0}, "percentage"),
        ({"percentage": 101}, "percentage"),
        ({"percentage": None, "amount_cents": 0}, "amount_cents"),
        ({"max_uses": 0}, "max_uses"),
        ({"valid_from": NAIVE}, "valid_from"),
        ({"valid_until": NAIVE}, "valid_until"),
        ({"valid_from": NOW, "valid_until": NOW}, "valid_until"),
    ],
)
def test_a_malformed_discount_code_is_refused_naming_the_field(changes: dict, field: str) -> None:
    cmd = CreateDiscountCode(**({"code": "SPRING25", "percentage": 25} | changes))
    _refused(lambda: discounts.create_discount_code(cmd, 1, 9), field)


def test_natural_keys_are_claimed_per_organization_and_organization_slugs_globally() -> None:
    assert catalog.claim_stream("org", "det-ny") == "slug-org.det-ny"
    assert catalog.claim_stream("event", "hamlet", 42) == "slug-42.event.hamlet"
    assert catalog.claim_stream("discount", "SPRING25", 42) == "slug-42.discount.SPRING25"
