"""Refunds without IO: which tickets, how much (prices less their discount share, plus their
service fee when the organization refunds fees), what is refused (unpaid, ended, already
refunded, scanned unless forced), what Stripe reports from outside, refund requests, and the
seats, places and discount use the sales desk gives back with a refund."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from domain import (
    discounts,
    purchase_settling,
    purchasing,
    refunds,
    sale_commands,
    sales,
    streams,
    tickets,
)
from domain.errors import InvalidCommand
from domain.inventory import attraction_days, holds
from domain.inventory.events import (
    AttractionTicketsReturned,
    HeldSeat,
    SeatsHeld,
    SeatsReturned,
)
from domain.purchasing import PurchaseState
from domain.tickets import TicketRefunded, TicketState
from tests.unit.builders import (
    HALL,
    HOLD_ENDS,
    NOW,
    SHOW_STARTS,
    STAAENDE,
    VOKSEN,
    apply,
    discount_code,
    museum_inventory,
    on_sale,
    purchase_opened,
    purchased_ticket,
    refused,
    replayed,
)

# Two seats at 350 kr. and a standing place at 200 kr.; 10 % off; a fee of 45 kr.
TICKETS = [
    purchased_ticket(1),
    purchased_ticket(2),
    purchased_ticket(3, ticket_type_id=STAAENDE, amount_cents=20000, seat=None),
]
PRICING = purchasing.Pricing(
    subtotal_cents=90000,
    discount_cents=9000,
    fee_cents=4500,
    total_cents=85500,
    currency="DKK",
    line_items=[],
    discount=None,
)


def _purchase(**changes: object) -> purchasing.PurchaseOpened:
    return purchase_opened(**({"tickets": TICKETS, "pricing": PRICING, "discount_id": 9} | changes))


def _paid(opened: purchasing.PurchaseOpened | None = None) -> tuple[PurchaseState, dict]:
    """A paid purchase and its issued tickets, by id."""
    opened = opened or _purchase()
    state = replayed(purchasing.evolve_purchase, None, [opened])
    state = replayed(
        purchasing.evolve_purchase,
        state,
        [purchasing.PaymentIntentCreated(token="tok", intent_id="pi_1", client_secret="s")],
    )
    issued = purchase_settling.paid_with_tickets(
        state, "pi_1", NOW, tickets.Schedule(starts_at=SHOW_STARTS)
    )
    state = replayed(purchasing.evolve_purchase, state, issued.pop(streams.purchase("tok")))
    ticket_states = {
        int(stream.removeprefix("ticket-")): replayed(tickets.evolve_ticket, None, events)
        for stream, events in issued.items()
    }
    return state, ticket_states


def _refund(
    state: PurchaseState,
    ticket_states: dict[int, TicketState],
    ticket_ids: list[int] | None = None,
    *,
    refund_fee: bool = True,
    force: bool = False,
    refund_id: str = "r1",
) -> refunds.Refund:
    return refunds.decide_refund(
        state,
        ticket_states,
        ticket_ids,
        refund_id=refund_id,
        reason="sick",
        by="partner",
        force=force,
        refund_fee=refund_fee,
    )


def _stored(
    state: PurchaseState, ticket_states: dict[int, TicketState], refund: refunds.Refund
) -> None:
    """The refund's purchase and ticket events, as stored."""
    for stream, events in refund.events.items():
        if stream == streams.purchase("tok"):
            apply(purchasing.evolve_purchase, state, events)
        elif stream.startswith("ticket-"):
            ticket_id = int(stream.removeprefix("ticket-"))
            apply(tickets.evolve_ticket, ticket_states[ticket_id], events)


def _decided(refund: refunds.Refund) -> purchasing.RefundDecided:
    (decided,) = refund.events[streams.purchase("tok")]
    assert isinstance(decided, purchasing.RefundDecided)
    return decided


def test_the_whole_purchase_gives_back_what_was_paid_with_the_fee_by_default() -> None:
    state, issued = _paid()
    refund = _refund(state, issued)
    decided = _decided(refund)
    assert decided.amount_cents == 85500 == PRICING.total_cents
    assert decided.ticket_ids == [1, 2, 3] and decided.intent_id == "pi_1"
    assert (decided.reason, decided.by, decided.refund_id) == ("sick", "partner", "r1")
    assert refund.whole and [t.id for t in refund.returned] == [1, 2, 3]
    for ticket_id in (1, 2, 3):
        assert refund.events[streams.ticket(ticket_id)] == [
            TicketRefunded(ticket_id=ticket_id, refund_id="r1", reason="sick")
        ]


def test_an_organization_that_keeps_its_fee_gives_back_the_tickets_alone() -> None:
    state, issued = _paid()
    assert _decided(_refund(state, issued, refund_fee=False)).amount_cents == 90000 - 9000


def test_a_ticket_gives_back_its_price_less_its_discount_share_plus_its_fee() -> None:
    state, issued = _paid()
    one = _refund(state, issued, [1])
    # 35000 less 35/90 of the 9000 discount, plus a third of the 4500 fee.
    assert _decided(one).amount_cents == 35000 - 3500 + 1500
    assert not one.whole and [t.id for t in one.returned] == [1]
    assert set(one.events) == {streams.purchase("tok"), streams.ticket(1)}
    assert _decided(_refund(state, issued, [3], refund_fee=False)).amount_cents == 20000 - 2000


def test_a_ticket_gives_back_the_discount_and_fee_it_was_sold_with() -> None:
    """Shares kept in the purchase (a discount on the seats alone, the fee by the rule on each
    price) are what each ticket gives back: the standing place had none of the discount."""
    kept = [
        msgspec.structs.replace(TICKETS[0], discount_cents=4500, fee_cents=1750),
        msgspec.structs.replace(TICKETS[1], discount_cents=4500, fee_cents=1750),
        msgspec.structs.replace(TICKETS[2], discount_cents=0, fee_cents=1000),
    ]
    state, issued = _paid(_purchase(tickets=kept))
    assert [issued[i].issued.service_fee_cents for i in (1, 2, 3)] == [1750, 1750, 1000]
    assert _decided(_refund(state, issued, [3])).amount_cents == 20000 + 1000
    assert _decided(_refund(state, issued, [1])).amount_cents == 35000 - 4500 + 1750
    assert _decided(_refund(state, issued)).amount_cents == PRICING.total_cents


def test_refunds_one_by_one_add_up_to_what_was_paid() -> None:
    for refund_fee, paid in ((True, 85500), (False, 81000)):
        state, issued = _paid()
        total = 0
        for i, ticket_id in enumerate((3, 1, 2)):
            refund = _refund(state, issued, [ticket_id], refund_fee=refund_fee, refund_id=f"r{i}")
            total += _decided(refund).amount_cents
            _stored(state, issued, refund)
        assert total == paid == state.refunded_cents
        assert refund.whole and state.refunded_tickets == {1, 2, 3}


def test_the_whole_purchase_after_a_part_is_the_rest() -> None:
    state, issued = _paid()
    _stored(state, issued, _refund(state, issued, [2]))
    rest = _refund(state, issued, refund_id="r2")
    assert _decided(rest).ticket_ids == [1, 3] and rest.whole
    assert _decided(rest).amount_cents == 85500 - 33000


def test_a_refunded_ticket_is_not_refunded_again() -> None:
    state, issued = _paid()
    _stored(state, issued, _refund(state, issued, [1]))
    assert issued[1].status == "refunded"
    assert tickets.admission(issued[1], NOW) == "refunded"
    with refused(refunds.AlreadyRefunded, "already_refunded"):
        _refund(state, issued, [2, 1], refund_id="r2")
    _stored(state, issued, _refund(state, issued, refund_id="r3"))
    with refused(refunds.AlreadyRefunded, "already_refunded"):
        _refund(state, issued, refund_id="r4")


def test_a_scanned_ticket_is_refunded_only_when_forced() -> None:
    state, issued = _paid()
    _, scanned = tickets.scan(issued[2], NOW, None)
    apply(tickets.evolve_ticket, issued[2], scanned)
    with refused(tickets.TicketWasScanned, "ticket_scanned"):
        _refund(state, issued)
    with refused(tickets.TicketWasScanned, "ticket_scanned"):
        _refund(state, issued, [2])
    forced = _refund(state, issued, [2], force=True)
    assert _decided(forced).ticket_ids == [2]
    assert _refund(state, issued, [1, 3]).returned == [TICKETS[0], TICKETS[2]]


@pytest.mark.parametrize(
    ("ticket_ids", "field"),
    [([], "ticket_ids"), ([1, 99], "ticket_ids[1]"), ([2, 2], "ticket_ids[1]")],
)
def test_ticket_ids_name_tickets_of_the_purchase_once(ticket_ids: list[int], field: str) -> None:
    state, issued = _paid()
    with refused(InvalidCommand, "invalid_request", field):
        _refund(state, issued, ticket_ids)


def test_only_a_paid_purchase_is_refunded() -> None:
    with refused(refunds.NotYetPaid, "not_yet_paid"):
        _refund(replayed(purchasing.evolve_purchase, None, [_purchase()]), {})
    for ending in (
        purchasing.PurchaseCancelled(token="tok", reason="cancelled"),
        purchasing.PurchaseExpired(token="tok"),
    ):
        ended = replayed(purchasing.evolve_purchase, None, [_purchase(), ending])
        with refused(refunds.OrderInactive, "order_inactive"):
            _refund(ended, {})


def test_a_reason_is_at_most_500_characters() -> None:
    state, issued = _paid()
    with refused(InvalidCommand, "invalid_request", "reason"):
        refunds.decide_refund(
            state,
            issued,
            None,
            refund_id="r1",
            reason="x" * 501,
            by="partner",
            force=False,
            refund_fee=True,
        )


def test_a_refund_made_outside_is_recorded_once_its_amount_exceeds_what_is_recorded() -> None:
    state, issued = _paid()
    mine = _refund(state, issued, [1])
    _stored(state, issued, mine)
    # Stripe's report of our own refund: nothing new.
    assert refunds.report_refund(state, 33000, refund_id="x") is None
    partial = refunds.report_refund(state, 40000, refund_id="d1")
    assert partial is not None and partial.returned == [] and not partial.whole
    (reported,) = partial.events[streams.purchase("tok")]
    assert isinstance(reported, purchasing.RefundReported)
    assert (reported.amount_cents, reported.ticket_ids) == (7000, [])
    _stored(state, issued, partial)
    assert refunds.report_refund(state, 40000, refund_id="again") is None
    full = refunds.report_refund(state, 85500, refund_id="d2")
    assert full is not None and full.whole and [t.id for t in full.returned] == [2, 3]
    _stored(state, issued, full)
    assert state.refunded_cents == 85500 and state.refunded_tickets == {1, 2, 3}
    assert {t.status for t in issued.values()} == {"refunded"}


def test_a_refund_report_beyond_the_payment_records_no_more_than_was_paid() -> None:
    state, issued = _paid()
    over = refunds.report_refund(state, 985500, refund_id="d")
    assert over is not None and over.whole
    (reported,) = over.events[streams.purchase("tok")]
    assert isinstance(reported, purchasing.RefundReported) and reported.amount_cents == 85500
    _stored(state, issued, over)
    assert state.refunded_cents == 85500
    assert refunds.report_refund(state, 995500, refund_id="again") is None


def test_a_refund_reported_before_its_payment_waits_for_it() -> None:
    """Stripe does not promise its events' order: refused, so Stripe delivers it again."""
    pending = replayed(purchasing.evolve_purchase, None, [_purchase()])
    with pytest.raises(refunds.PaymentNotRecorded):
        refunds.report_refund(pending, 85500, refund_id="d")


def test_a_dispute_is_recorded_once() -> None:
    state, _ = _paid()
    (disputed,) = refunds.record_dispute(
        state, dispute_id="dp_1", intent_id="pi_1", amount_cents=85500, reason=None, status=None
    )
    assert isinstance(disputed, purchasing.PaymentDisputed)
    assert (disputed.reason, disputed.status, disputed.currency) == (
        "general",
        "needs_response",
        "DKK",
    )
    apply(purchasing.evolve_purchase, state, [disputed])
    again = refunds.record_dispute(
        state, dispute_id="dp_1", intent_id="pi_1", amount_cents=1, reason="fraudulent", status=""
    )
    assert again == []


def test_a_refund_request_is_approved_with_its_refund_or_declined_once() -> None:
    state, issued = _paid()
    asked = refunds.request_refund(state, issued[2], request_id="q1", reason=" ill ", now=NOW)
    request = replayed(refunds.evolve_refund_request, None, asked)
    assert (request.status, request.requested.ticket_id, request.requested.reason) == (
        "pending",
        2,
        "ill",
    )
    refund = refunds.approve_request(
        request, state, issued, refund_id="r1", refund_fee=True, now=NOW
    )
    assert _decided(refund).ticket_ids == [2] and _decided(refund).by == "buyer"
    approved = refund.events[streams.refund_request("q1")]
    apply(refunds.evolve_refund_request, request, approved)
    assert (request.status, request.refund_id) == ("approved", "r1")
    with refused(refunds.RefundRequestClosed, "refund_request_closed"):
        refunds.decline(request, None, NOW)
    other = replayed(refunds.evolve_refund_request, None, asked)
    apply(refunds.evolve_refund_request, other, refunds.decline(other, "too late", NOW))
    assert (other.status, other.decline_reason) == ("declined", "too late")
    with refused(refunds.RefundRequestClosed, "refund_request_closed"):
        refunds.approve_request(other, state, issued, refund_id="r2", refund_fee=True, now=NOW)


def test_a_refund_request_needs_a_paid_ticket_neither_refunded_nor_scanned() -> None:
    pending = replayed(purchasing.evolve_purchase, None, [_purchase()])
    with refused(refunds.NotYetPaid, "not_yet_paid"):
        refunds.request_refund(pending, None, request_id="q", reason=None, now=NOW)
    state, issued = _paid()
    _stored(state, issued, _refund(state, issued, [1]))
    with refused(refunds.AlreadyRefunded, "already_refunded"):
        refunds.request_refund(state, issued[1], request_id="q", reason=None, now=NOW)
    apply(tickets.evolve_ticket, issued[2], tickets.scan(issued[2], NOW, None)[1])
    with refused(tickets.TicketWasScanned, "ticket_scanned"):
        refunds.request_refund(state, issued[2], request_id="q", reason=None, now=NOW)


# ---- at the sales desk --------------------------------------------------------------------


def _held(inventory: holds.EventInventory, opened: purchasing.PurchaseOpened) -> None:
    seats = [
        HeldSeat(ticket_type_id=t.ticket_type_id, **msgspec.structs.asdict(t.seat))
        for t in opened.tickets
        if t.seat is not None
    ]
    counts: dict[int, int] = {}
    for t in opened.tickets:
        counts[t.ticket_type_id] = counts.get(t.ticket_type_id, 0) + 1
    held = SeatsHeld(
        event_id=3, purchase_token="tok", seats=seats, counts=counts, expires_at=HOLD_ENDS
    )
    apply(holds.evolve_inventory, inventory, [held])


def _at_desk(
    refund: refunds.Refund, inventory: object, companions: dict | None = None
) -> sale_commands.Decision:
    command = sale_commands.RefundTickets(opened=_purchase(), refund=refund, expected={"x": 1})
    return sales.decide(command, inventory, companions or {})


def test_a_partial_refund_gives_its_seats_back_and_keeps_the_rest_held() -> None:
    inventory = on_sale()
    _held(inventory, _purchase())
    state, issued = _paid()
    decision = _at_desk(_refund(state, issued, [1, 3]), inventory)
    returned = decision.events[streams.event(3)]
    assert returned == [
        SeatsReturned(
            event_id=3,
            purchase_token="tok",
            seats=[HeldSeat(ticket_type_id=VOKSEN, section_id=HALL, row="A", seat_number=1)],
            counts={VOKSEN: 1, STAAENDE: 1},
            reason="refunded",
        )
    ]
    assert decision.expected == {"x": 1}
    assert streams.discount(9) not in decision.events
    rebuilt = on_sale()
    _held(rebuilt, _purchase())
    for state_ in (inventory, rebuilt):
        apply(holds.evolve_inventory, state_, returned)
        assert set(state_.taken) == {(HALL, "A", 2)}
        assert state_.taken_per_type == {VOKSEN: 1, STAAENDE: 0}
        assert state_.holds["tok"].counts == {VOKSEN: 1}
        assert [s.seat_number for s in state_.holds["tok"].seats] == [2]
    # The rest of the hold goes with the rest of the refund.
    _stored(state, issued, _refund(state, issued, [1, 3]))
    rest = _at_desk(_refund(state, issued, refund_id="r2"), inventory)
    apply(holds.evolve_inventory, inventory, rest.events[streams.event(3)])
    assert inventory.taken == {} and "tok" not in inventory.holds
    assert sum(inventory.taken_per_type.values()) == 0


def test_the_last_refund_gives_the_discount_use_back() -> None:
    inventory = on_sale()
    _held(inventory, _purchase())
    code = discounts.evolve_discount(None, discount_code())
    apply(
        discounts.evolve_discount,
        code,
        [discounts.DiscountCodeRedeemed(discount_id=9, purchase_token="tok")],
    )
    state, issued = _paid()
    whole = _refund(state, issued)
    command = sale_commands.RefundTickets(opened=_purchase(), refund=whole, expected={})
    assert sales.discount_streams(command) == (streams.discount(9),)
    decision = sales.decide(command, inventory, {streams.discount(9): code})
    assert decision.events[streams.discount(9)] == [
        discounts.DiscountCodeReleased(discount_id=9, purchase_token="tok")
    ]
    part = sale_commands.RefundTickets(
        opened=_purchase(), refund=_refund(state, issued, [1]), expected={}
    )
    assert sales.discount_streams(part) == ()


def test_a_refund_gives_back_only_what_the_purchase_holds() -> None:
    state, issued = _paid()
    assert _at_desk(_refund(state, issued), on_sale()).events[streams.event(3)] == []


def test_an_attraction_refund_gives_its_places_back_on_the_day() -> None:
    day = (NOW + timedelta(days=3)).date()
    opened = _purchase(
        event_id=None,
        attraction_id=5,
        visit_date=day,
        tickets=[purchased_ticket(i, ticket_type_id=7, seat=None) for i in (1, 2)],
        pricing=purchasing.Pricing(
            subtotal_cents=70000,
            discount_cents=0,
            fee_cents=0,
            total_cents=70000,
            currency="DKK",
            line_items=[],
            discount=None,
        ),
        discount_id=None,
    )
    inventory = museum_inventory(daily_max_tickets=10)
    held = attraction_days.hold_attraction_tickets(
        inventory,
        token="tok",
        quantities={7: 2},
        visit_date=day,
        today=NOW.date(),
        expires_at=HOLD_ENDS,
    )
    apply(attraction_days.evolve_attraction, inventory, [held])
    state, issued = _paid(opened)
    command = sale_commands.RefundTickets(
        opened=opened, refund=_refund(state, issued, [2]), expected={}
    )
    returned = sales.decide(command, inventory, {}).events[streams.attraction(5)]
    assert returned == [
        AttractionTicketsReturned(
            attraction_id=5, purchase_token="tok", visit_date=day, counts={7: 1}, reason="refunded"
        )
    ]
    apply(attraction_days.evolve_attraction, inventory, returned)
    assert inventory.taken_per_day[day] == 1 and inventory.holds["tok"].counts == {7: 1}
