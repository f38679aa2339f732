"""The biggest decision of the product, without IO: opening a purchase (holds, discount use,
price, tickets when free, a payment intent created for its forecast), giving holds back, and
holding again for a payment that came late."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import msgspec
import pytest

from domain import (
    catalog,
    discounts,
    purchase_opening,
    purchase_settling,
    purchasing,
    sale_commands,
    sales,
    streams,
    tickets,
    venues,
)
from domain.errors import InvalidCommand, NotFound
from domain.inventory import attraction_days, holds
from domain.inventory.events import AttractionTicketsHeld, SeatRef, SeatsHeld
from domain.purchasing import Attendee, Buyer, PurchaseRequest
from domain.venues import Row, SectionPlan

NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)
VENUE_ID, EVENT_ID, SECTION_ID, TYPE_ID = 2, 3, 12, 45
ATTRACTION_ID, PLACE_TYPE_ID = 4, 46
DISCOUNT_ID = 9
BUYER = Buyer(name="Simon Hindkaer", email="simon@example.com")


def _organization(organization_id: int = 1, **changes) -> catalog.OrganizationRegistered:
    (org,) = catalog.register_organization(
        catalog.RegisterOrganization(
            **({"slug": "scene", "name": "Scene", "currency": "DKK"} | changes)
        ),
        organization_id,
    )
    assert isinstance(org, catalog.OrganizationRegistered)
    return org


PAYING = _organization(
    stripe_account_id="acct_1", fee=catalog.FeeRule(percent_bps=500, per_ticket_cents=0)
)


def _venue() -> venues.VenueRegistered:
    section = SectionPlan(
        name="S", width=1.0, height=1.0, rows=[Row(identifier="A", start=1, end=4)]
    )
    (venue,) = venues.register_venue(
        venues.RegisterVenue(key="v", name="V", sections=[section]), 1, VENUE_ID, [SECTION_ID]
    )
    assert isinstance(venue, venues.VenueRegistered)
    return venue


def _event(price_cents: int = 35000) -> holds.EventInventory:
    plan = catalog.TicketTypePlan(name="Voksen", price_cents=price_cents, section_ids=[SECTION_ID])
    command = catalog.ScheduleEvent(
        slug="hamlet",
        name="Hamlet",
        venue_id=VENUE_ID,
        event_date=NOW + timedelta(days=10),
        publish=True,
        ticket_types=[plan],
    )
    state = holds.EventInventory()
    for event in catalog.schedule_event(command, 1, _venue(), EVENT_ID, [TYPE_ID]):
        state = holds.evolve_inventory(state, event)
    return state


def _attraction() -> attraction_days.AttractionInventory:
    command = catalog.OpenAttraction(
        slug="museum",
        name="Museum",
        venue_id=VENUE_ID,
        visit_date_required=True,
        daily_max_tickets=3,
        ticket_types=[catalog.TicketTypePlan(name="Voksen", price_cents=15000, capacity=99)],
    )
    state = attraction_days.AttractionInventory()
    for event in catalog.open_attraction(command, 1, _venue(), ATTRACTION_ID, [PLACE_TYPE_ID]):
        state = attraction_days.evolve_attraction(state, event)
    return state


def _code(max_uses: int = 10) -> discounts.DiscountState:
    command = discounts.CreateDiscountCode(code="SPRING25", percentage=25, max_uses=max_uses)
    (created,) = discounts.create_discount_code(command, 1, DISCOUNT_ID)
    state = discounts.evolve_discount(None, created)
    assert state is not None
    return state


def _draft(token: str = "p1", n: int = 2, discount_id: int | None = None) -> sale_commands.Draft:
    return sale_commands.Draft(
        token=token,
        ticket_ids=list(range(100, 100 + n)),
        codes=[f"CODE{i}" for i in range(n)],
        attendee_tokens=[f"tok_{i}" for i in range(n)],
        access_code="ACCESS12",
        now=NOW,
        expires_at=NOW + timedelta(minutes=30),
        api_key_id=7,
        discount_id=discount_id,
    )


def _open(
    n: int = 2,
    *,
    org: catalog.OrganizationRegistered = PAYING,
    token: str = "p1",
    discount_id: int | None = None,
    **request,
) -> sale_commands.OpenEventPurchase:
    req = PurchaseRequest(quantities={TYPE_ID: n}, buyer=BUYER, event_slug="hamlet", **request)
    return sale_commands.OpenEventPurchase(
        request=req,
        organization=org,
        draft=_draft(token, n, discount_id),
        sections=_venue().sections,
    )


def _apply(state: holds.EventInventory, decision: sale_commands.Decision) -> holds.EventInventory:
    for event in decision.events.get(streams.event(EVENT_ID), []):
        holds.evolve_inventory(state, event)
    return state


def _opened(decision: sale_commands.Decision, token: str = "p1") -> purchasing.PurchaseState:
    state = purchasing.replay_purchase(decision.events[streams.purchase(token)])
    assert state is not None
    return state


def test_a_purchase_holds_its_seats_and_opens_with_the_price_and_its_tickets() -> None:
    decision = sales.decide(_open(2), _event(), {})

    (held,) = decision.events[streams.event(EVENT_ID)]
    assert isinstance(held, SeatsHeld) and len(held.seats) == 2
    assert held.purchase_token == "p1" and held.counts == {TYPE_ID: 2}
    state = _opened(decision)
    assert state.status == "pending_payment"
    assert state.opened.pricing.subtotal_cents == 70000
    assert state.opened.pricing.total_cents == 73500  # the organization's 5 % fee
    assert [t.code for t in state.opened.tickets] == ["CODE0", "CODE1"]
    assert {(t.seat.row, t.seat.seat_number) for t in state.opened.tickets if t.seat} == {
        (s.row, s.seat_number) for s in held.seats
    }
    assert decision.expected == {streams.purchase("p1"): streams.NEW}
    assert decision.result == decision.events[streams.purchase("p1")]
    assert not any(s.startswith(f"{streams.TICKET}-") for s in decision.events)


def test_attendee_names_go_on_their_tickets_and_the_buyer_on_the_others() -> None:
    named = Attendee(ticket_type_id=TYPE_ID, index=2, name="Ida Holm", email="ida@example.com")
    state = _opened(sales.decide(_open(2, attendees=[named]), _event(), {}))
    first, second = state.opened.tickets
    assert (first.name, first.named) == (BUYER.name, False)
    assert (second.name, second.email, second.named) == ("Ida Holm", "ida@example.com", True)


def test_a_seat_taken_in_the_same_batch_is_refused_to_the_next_buyer() -> None:
    inventory = _event()
    seat = SeatRef(section_id=SECTION_ID, row="A", seat_number=2)
    first = _open(1, selected_seats={TYPE_ID: [seat]})
    _apply(inventory, sales.decide(first, inventory, {}))
    second = msgspec.structs.replace(first, draft=_draft("p2", 1))
    with pytest.raises(holds.SeatsTaken):
        sales.decide(second, inventory, {})


def test_another_organizations_event_is_not_found() -> None:
    with pytest.raises(NotFound):
        sales.decide(_open(org=_organization(2, stripe_account_id="acct_2")), _event(), {})


def test_too_many_tickets_of_a_type_is_refused_before_anything_is_held() -> None:
    inventory = _event()
    with pytest.raises(InvalidCommand) as refused:
        sales.decide(_open(11), inventory, {})  # at most 10 per purchase by default
    assert refused.value.field == f"quantities.{TYPE_ID}"
    assert inventory.taken == {}


def test_an_organization_without_stripe_cannot_sell_what_costs_money() -> None:
    no_stripe = _organization()
    with pytest.raises(purchase_opening.PaymentProcessingUnavailable):
        sales.decide(_open(org=no_stripe), _event(), {})


def test_a_free_purchase_is_paid_at_once_with_its_tickets_in_the_same_decision() -> None:
    decision = sales.decide(_open(2, org=_organization()), _event(price_cents=0), {})

    state = _opened(decision)
    assert state.status == "paid" and state.paid_at == NOW
    issued = [streams.ticket(i) for i in (100, 101)]
    assert all(isinstance(decision.events[s][0], tickets.TicketIssued) for s in issued)
    assert decision.expected == dict.fromkeys([streams.purchase("p1"), *issued], streams.NEW)


def test_a_discount_code_is_redeemed_in_the_purchase_that_uses_it() -> None:
    code_stream = streams.discount(DISCOUNT_ID)
    command = _open(2, discount_id=DISCOUNT_ID)
    assert sales.discount_streams(command) == (code_stream,)

    decision = sales.decide(command, _event(), {code_stream: _code()})

    (redeemed,) = decision.events[code_stream]
    assert isinstance(redeemed, discounts.DiscountCodeRedeemed)
    assert redeemed.purchase_token == "p1"
    assert _opened(decision).opened.pricing.discount_cents == 17500


def test_a_used_up_or_unknown_discount_code_refuses_the_purchase() -> None:
    code_stream = streams.discount(DISCOUNT_ID)
    used_up = _code(max_uses=1)
    discounts.evolve_discount(
        used_up, discounts.DiscountCodeRedeemed(discount_id=DISCOUNT_ID, purchase_token="p0")
    )
    command = _open(1, discount_id=DISCOUNT_ID)
    with pytest.raises(discounts.MaxUsesReached):
        sales.decide(command, _event(), {code_stream: used_up})
    with pytest.raises(discounts.InvalidDiscountCode):
        sales.decide(command, _event(), {code_stream: None})


def test_an_intent_created_for_the_forecast_is_recorded_in_the_purchase() -> None:
    command = _open(2)
    forecast = _opened(sales.decide(command, _event(), {}))
    intent = sale_commands.PrepaidIntent(
        intent_id="pi_1",
        client_secret="pi_1_secret",
        amount_cents=forecast.opened.pricing.total_cents,
    )

    state = _opened(sales.decide(sale_commands.with_intent(command, intent), _event(), {}))

    assert (state.intent_id, state.client_secret) == ("pi_1", "pi_1_secret")


def test_an_attraction_purchase_holds_places_of_its_visit_day() -> None:
    visit = date(2026, 4, 3)
    req = PurchaseRequest(
        quantities={PLACE_TYPE_ID: 3}, buyer=BUYER, attraction_slug="museum", visit_date=visit
    )
    command = sale_commands.OpenAttractionPurchase(
        request=req, organization=PAYING, draft=_draft(n=3)
    )
    inventory = _attraction()

    decision = sales.decide(command, inventory, {})

    (held,) = decision.events[streams.attraction(ATTRACTION_ID)]
    assert isinstance(held, AttractionTicketsHeld) and held.visit_date == visit
    for event in decision.events[streams.attraction(ATTRACTION_ID)]:
        attraction_days.evolve_attraction(inventory, event)
    more = msgspec.structs.replace(
        command,
        request=msgspec.structs.replace(req, quantities={PLACE_TYPE_ID: 1}),
        draft=_draft("p2", 1),
    )
    with pytest.raises(attraction_days.DailyCapacityExceeded):
        sales.decide(more, inventory, {})


def _held_purchase(
    discount: bool = False,
) -> tuple[holds.EventInventory, purchasing.PurchaseState, dict]:
    inventory = _event()
    code_stream = streams.discount(DISCOUNT_ID)
    companions = {code_stream: _code()} if discount else {}
    decision = sales.decide(
        _open(2, discount_id=DISCOUNT_ID if discount else None), inventory, companions
    )
    _apply(inventory, decision)
    for event in decision.events.get(code_stream, []):
        discounts.evolve_discount(companions[code_stream], event)
    return inventory, _opened(decision), companions


def test_releasing_gives_back_the_seats_and_the_discount_use_with_the_ending() -> None:
    inventory, state, companions = _held_purchase(discount=True)
    ending = purchasing.expire(state, NOW + timedelta(hours=1))
    command = sale_commands.ReleaseHolds(
        opened=state.opened, reason="expired", ending=ending, purchase_version=2
    )
    assert sales.discount_streams(command) == (streams.discount(DISCOUNT_ID),)

    decision = sales.decide(command, inventory, companions)

    assert decision.events[streams.purchase("p1")] == ending
    assert decision.expected == {streams.purchase("p1"): 2}
    released = decision.events[streams.discount(DISCOUNT_ID)]
    assert isinstance(released[0], discounts.DiscountCodeReleased)
    _apply(inventory, decision)
    assert inventory.taken == {} and "p1" not in inventory.holds


def test_a_late_payment_holds_the_same_seats_again_and_pays_with_tickets() -> None:
    inventory, state, _ = _held_purchase()
    seats = set(inventory.taken)
    for event in holds.release_seats(inventory, "p1", "expired"):
        holds.evolve_inventory(inventory, event)
    purchasing.evolve_purchase(state, purchasing.PurchaseExpired(token="p1"))
    later = NOW + timedelta(hours=1)
    command = sale_commands.HoldAgain(
        state=state,
        purchase_version=3,
        intent_id="pi_1",
        now=later,
        schedule=tickets.Schedule(),
        sections=_venue().sections,
    )

    decision = sales.decide(command, inventory, {})

    _apply(inventory, decision)
    assert set(inventory.taken) == seats
    paid = decision.events[streams.purchase("p1")]
    assert isinstance(paid[0], purchasing.PurchasePaid)
    assert decision.expected[streams.purchase("p1")] == 3
    assert decision.expected[streams.ticket(100)] == streams.NEW
    with pytest.raises(purchase_settling.SettledMeanwhile):
        sales.decide(command, inventory, {})


def test_a_late_payment_for_seats_sold_since_is_refused() -> None:
    inventory, state, _ = _held_purchase()
    for event in holds.release_seats(inventory, "p1", "expired"):
        holds.evolve_inventory(inventory, event)
    _apply(inventory, sales.decide(_open(4, token="p2"), inventory, {}))
    purchasing.evolve_purchase(state, purchasing.PurchaseExpired(token="p1"))
    command = sale_commands.HoldAgain(
        state=state,
        purchase_version=3,
        intent_id="pi_1",
        now=NOW,
        schedule=tickets.Schedule(),
        sections=_venue().sections,
    )
    with pytest.raises(holds.SeatsTaken):
        sales.decide(command, inventory, {})


def test_the_previous_hold_is_rebuilt_from_what_was_bought() -> None:
    _, state, _ = _held_purchase()
    before = purchase_settling.previous_hold(state.opened, NOW)
    assert isinstance(before, SeatsHeld)
    assert before.counts == {TYPE_ID: 2}
    assert {s.seat_number for s in before.seats} == {
        t.seat.seat_number for t in state.opened.tickets if t.seat
    }
