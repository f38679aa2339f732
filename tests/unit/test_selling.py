"""The selling rules without IO: prices as the spec's example computes them, discount verdicts,
holds that never take a seat twice, and daily caps for attractions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain import catalog, discounts, venues
from domain.catalog import FeeRule, TicketType
from domain.errors import InvalidCommand
from domain.inventory import attraction_days, holds
from domain.inventory.events import SeatRef
from domain.pricing import price_basket
from domain.venues import Row, SectionPlan
from tests.unit.builders import discount_code

NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)
VOKSEN = TicketType(id=45, name="Voksen", price_cents=35000, section_ids=[12], max_per_purchase=8)


def _code(**changes) -> discounts.DiscountCodeCreated:
    return discount_code(**({"max_uses": 500} | changes))


def test_the_spec_pricing_example() -> None:
    pricing = price_basket({45: VOKSEN}, {45: 2}, FeeRule(percent_bps=500), "DKK", NOW, _code())
    assert (pricing.subtotal_cents, pricing.discount_cents, pricing.fee_cents) == (
        70000,
        17500,
        3500,
    )
    assert pricing.total_cents == 56000
    assert pricing.discount is not None and pricing.discount.percentage == 25


def test_early_bird_price_applies_until_its_end() -> None:
    early = TicketType(
        id=1,
        name="V",
        price_cents=100,
        early_bird_price_cents=80,
        early_bird_end_date=NOW + timedelta(days=1),
        capacity=10,
    )
    assert price_basket({1: early}, {1: 1}, FeeRule(), "DKK", NOW).subtotal_cents == 80
    later = NOW + timedelta(days=2)
    assert price_basket({1: early}, {1: 1}, FeeRule(), "DKK", later).subtotal_cents == 100


def test_fixed_discount_never_exceeds_the_eligible_lines() -> None:
    cheap = TicketType(id=2, name="Barn", price_cents=3000, capacity=5)
    pricing = price_basket(
        {45: VOKSEN, 2: cheap},
        {45: 1, 2: 1},
        FeeRule(),
        "DKK",
        NOW,
        _code(percentage=None, amount_cents=5000, applies_to_all=False, ticket_type_ids=[2]),
    )
    assert pricing.discount_cents == 3000


@pytest.mark.parametrize(
    ("changes", "uses", "reason"),
    [
        ({"valid_from": NOW + timedelta(days=1)}, 0, "not_yet_valid"),
        ({"valid_until": NOW}, 0, "expired"),
        ({"max_uses": 3}, 3, "max_uses_reached"),
        ({"applies_to_all": False, "ticket_type_ids": [99]}, 0, "invalid_code"),
        ({}, 499, None),
    ],
)
def test_discount_verdicts(changes: dict, uses: int, reason: str | None) -> None:
    assert discounts.verdict(_code(**changes), uses, NOW, {45}) == reason
    assert discounts.verdict(None, 0, NOW, {45}) == "not_found"


def _event() -> tuple[holds.EventInventory, list[venues.Section]]:
    (venue,) = venues.register_venue(
        venues.RegisterVenue(
            key="v",
            name="V",
            sections=[
                SectionPlan(
                    name="S", width=1.0, height=1.0, rows=[Row(identifier="A", start=1, end=4)]
                )
            ],
        ),
        1,
        2,
        [12],
    )
    assert isinstance(venue, venues.VenueRegistered)
    cmd = catalog.ScheduleEvent(
        slug="e",
        name="E",
        venue_id=2,
        event_date=NOW + timedelta(days=10),
        publish=True,
        ticket_types=[catalog.TicketTypePlan(name="Voksen", price_cents=35000, section_ids=[12])],
    )
    state = holds.EventInventory()
    for e in catalog.schedule_event(cmd, 1, venue, 3, [45]):
        state = holds.evolve_inventory(state, e)
    return state, venue.sections


def _hold(state, sections, token: str, n: int, seats=None):
    return holds.hold_seats(
        state,
        sections,
        token=token,
        quantities={45: n},
        selected={45: seats} if seats else {},
        now=NOW,
        expires_at=NOW + timedelta(minutes=30),
    )


def test_a_seat_is_never_held_twice_and_release_frees_it() -> None:
    state, sections = _event()
    seat = SeatRef(section_id=12, row="A", seat_number=2)
    holds.evolve_inventory(state, _hold(state, sections, "p1", 1, [seat]))
    with pytest.raises(holds.SeatsTaken):
        _hold(state, sections, "p2", 1, [seat])
    for e in holds.release_seats(state, "p1", "cancelled"):
        holds.evolve_inventory(state, e)
    assert _hold(state, sections, "p2", 1, [seat]).seats[0].seat_number == 2


def test_auto_selection_stops_at_capacity() -> None:
    state, sections = _event()
    holds.evolve_inventory(state, _hold(state, sections, "p1", 3))
    with pytest.raises(holds.InsufficientAvailability):
        _hold(state, sections, "p2", 2)
    assert len(_hold(state, sections, "p3", 1).seats) == 1


def test_released_seats_are_chosen_and_counted_again() -> None:
    """Holds and releases keep the per-section and per-row bookkeeping that server-side seat
    choice and availability rely on."""
    state, sections = _event()
    held = _hold(state, sections, "p1", 2)
    holds.evolve_inventory(state, held)
    holds.evolve_inventory(state, _hold(state, sections, "p2", 2))
    with pytest.raises(holds.InsufficientAvailability):
        _hold(state, sections, "p3", 1)
    for e in holds.release_seats(state, "p1", "expired"):
        holds.evolve_inventory(state, e)
    assert state.taken_per_section[12] == 2
    again = _hold(state, sections, "p3", 2)
    assert {s.seat_number for s in again.seats} == {s.seat_number for s in held.seats}
    holds.evolve_inventory(state, again)
    with pytest.raises(holds.InsufficientAvailability):
        _hold(state, sections, "p4", 1)


def test_seat_outside_the_venue_is_refused_naming_it() -> None:
    state, sections = _event()
    with pytest.raises(InvalidCommand) as refused:
        _hold(state, sections, "p", 1, [SeatRef(section_id=12, row="Z", seat_number=1)])
    assert refused.value.field == "selected_seats.45[0]"


def test_attraction_day_cap() -> None:
    museum = catalog.AttractionOpened(
        attraction_id=5,
        organization_id=1,
        venue_id=2,
        slug="m",
        name="M",
        description=None,
        visit_date_required=True,
        daily_max_tickets=3,
        opening_hours={},
        ticket_types=[TicketType(id=7, name="Voksen", price_cents=100)],
    )
    state = attraction_days.evolve_attraction(attraction_days.AttractionInventory(), museum)
    day = date(2026, 4, 2)

    def hold(token: str, n: int, visit: date | None = day):
        return attraction_days.hold_attraction_tickets(
            state,
            token=token,
            quantities={7: n},
            visit_date=visit,
            today=NOW.date(),
            expires_at=NOW + timedelta(minutes=30),
        )

    attraction_days.evolve_attraction(state, hold("a", 2))
    with pytest.raises(attraction_days.DailyCapacityExceeded):
        hold("b", 2)
    assert hold("c", 2, date(2026, 4, 3)).counts == {7: 2}
    with pytest.raises(InvalidCommand):
        hold("d", 1, None)
