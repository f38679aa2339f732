"""The purchase aggregate without IO: what a request is refused with before anything is held,
and how an open purchase is paid, cancelled or expired (each once, and never two of them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain import purchasing
from domain.errors import InvalidCommand, NotFound
from domain.events import Event
from domain.purchasing import (
    AlreadyPaid,
    Attendee,
    Buyer,
    PurchaseCancelled,
    PurchaseExpired,
    PurchasePaid,
    PurchaseRequest,
    PurchaseState,
)
from tests.unit.builders import HOLD_ENDS, NOW, purchase_opened, refused, replayed, seat

OPENED = purchase_opened()
INTENT = purchasing.PaymentIntentCreated(token="tok", intent_id="pi_1", client_secret="sec_1")
LATER = NOW + timedelta(minutes=5)


def _then(state: PurchaseState | None, events: list[Event]) -> PurchaseState:
    return replayed(purchasing.evolve_purchase, state, events)


def _purchase(*events: Event) -> PurchaseState:
    return _then(None, [OPENED, INTENT, *events])


# ---- the stream ------------------------------------------------------------------------------


def test_a_purchase_is_pending_payment_from_its_opening_with_the_intent_it_was_given() -> None:
    assert purchasing.replay_purchase([]) is None
    assert purchasing.replay_purchase([INTENT]) is None
    state = _purchase()
    assert (state.status, state.intent_id, state.client_secret, state.stripe_status) == (
        "pending_payment",
        "pi_1",
        "sec_1",
        "requires_payment_method",
    )


def test_a_failed_payment_leaves_the_purchase_open_for_another_try() -> None:
    failed = purchasing.PaymentFailed(token="tok", intent_id="pi_1", reason="card_declined")
    state = _purchase(failed)
    assert (state.status, state.stripe_status) == ("pending_payment", "requires_payment_method")
    assert purchasing.pay(state, "pi_1", LATER) == [
        PurchasePaid(token="tok", paid_at=LATER, intent_id="pi_1")
    ]


# ---- pay -------------------------------------------------------------------------------------


def test_paying_an_open_purchase_records_when_and_by_which_intent() -> None:
    state = _purchase()
    paid = purchasing.pay(state, "pi_1", LATER)
    assert paid == [PurchasePaid(token="tok", paid_at=LATER, intent_id="pi_1", late=False)]
    state = _then(state, paid)
    assert (state.status, state.paid_at, state.stripe_status) == ("paid", LATER, "succeeded")


def test_a_purchase_is_paid_once() -> None:
    state = _then(_purchase(), purchasing.pay(_purchase(), "pi_1", LATER))
    assert purchasing.pay(state, "pi_1", LATER + timedelta(seconds=1)) == []
    assert purchasing.pay(state, "pi_1", LATER, late=True) == []


@pytest.mark.parametrize(
    "ended",
    [PurchaseExpired(token="tok"), PurchaseCancelled(token="tok", reason="cancelled")],
)
def test_a_late_payment_whose_seats_were_held_again_ends_the_purchase_paid(ended: Event) -> None:
    state = _purchase(ended)
    paid = purchasing.pay(state, "pi_1", LATER, late=True)
    assert paid == [PurchasePaid(token="tok", paid_at=LATER, intent_id="pi_1", late=True)]
    assert _then(state, paid).status == "paid"


# ---- cancel ----------------------------------------------------------------------------------


def test_cancelling_an_open_purchase_ends_it_and_a_second_cancel_finds_nothing() -> None:
    state = _purchase()
    cancelled = purchasing.cancel(state, "cancelled")
    assert cancelled == [PurchaseCancelled(token="tok", reason="cancelled")]
    state = _then(state, cancelled)
    assert state.status == "cancelled"
    with refused(NotFound, "not_found", "token"):
        purchasing.cancel(state, "cancelled")


def test_an_unknown_or_expired_purchase_cannot_be_cancelled() -> None:
    with refused(NotFound, "not_found", "token"):
        purchasing.cancel(None, "cancelled")
    with refused(NotFound, "not_found", "token"):
        purchasing.cancel(_purchase(PurchaseExpired(token="tok")), "cancelled")


def test_a_paid_purchase_is_refunded_not_cancelled() -> None:
    paid = _purchase(PurchasePaid(token="tok", paid_at=LATER, intent_id="pi_1"))
    with refused(AlreadyPaid, "already_paid"):
        purchasing.cancel(paid, "cancelled")


# ---- expire ----------------------------------------------------------------------------------


def test_an_open_purchase_expires_at_its_expiry_not_before() -> None:
    state = _purchase()
    assert purchasing.expire(state, HOLD_ENDS - timedelta(microseconds=1)) == []
    expired = purchasing.expire(state, HOLD_ENDS)
    assert expired == [PurchaseExpired(token="tok")]
    state = _then(state, expired)
    assert state.status == "expired"
    assert purchasing.expire(state, HOLD_ENDS + timedelta(hours=1)) == []


@pytest.mark.parametrize(
    "ended",
    [
        PurchasePaid(token="tok", paid_at=LATER, intent_id="pi_1"),
        PurchaseCancelled(token="tok", reason="cancelled"),
    ],
)
def test_a_paid_or_cancelled_purchase_never_expires(ended: Event) -> None:
    assert purchasing.expire(_purchase(ended), HOLD_ENDS + timedelta(days=1)) == []


# ---- late-payment refunds --------------------------------------------------------------------


def test_the_refund_of_a_cancelled_purchase_is_decided_for_the_payment_and_reason() -> None:
    state = _purchase(PurchaseCancelled(token="tok", reason="cancelled"))
    decided = purchasing.decide_late_refund(state, "pi_2", "seats_taken")
    assert decided == [
        purchasing.LatePaymentRefundDecided(token="tok", intent_id="pi_2", reason="seats_taken")
    ]
    state = _then(state, decided)
    assert (state.status, state.refunded, state.stripe_status) == (
        "cancelled",
        True,
        "refund_pending",
    )
    assert purchasing.record_refund(state, "re_1")[0].intent_id == "pi_2"


# ---- the request -----------------------------------------------------------------------------


def _request(**changes: Any) -> PurchaseRequest:
    base: dict[str, Any] = {
        "event_slug": "hamlet",
        "quantities": {45: 2},
        "buyer": Buyer(name="Ann", email="ann@example.com"),
    }
    return PurchaseRequest(**(base | changes))


def _attendee(index: int = 1, **changes: Any) -> Attendee:
    return Attendee(**({"ticket_type_id": 45, "index": index} | changes))


def test_a_well_formed_request_passes() -> None:
    purchasing.validate_request(
        _request(
            quantities={45: 2, 46: 0},
            attendees=[_attendee(1, name="Ann"), _attendee(2, email="")],
            selected_seats={45: [seat("A", 1), seat("A", 2)]},
            comment="x" * purchasing.COMMENT_MAX,
        )
    )
    purchasing.validate_request(
        _request(event_slug=None, attraction_slug="museum", visit_date=NOW.date())
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_slug": None}, "event_slug"),
        ({"attraction_slug": "museum"}, "event_slug"),
        ({"quantities": {45: 3, 46: -1}}, "quantities.46"),
        ({"quantities": {45: 0}}, "quantities"),
        ({"quantities": {45: 20, 46: 1}}, "quantities"),
        ({"buyer": Buyer(name="  ", email="ann@example.com")}, "buyer.name"),
        ({"buyer": Buyer(name="A" * 201, email="ann@example.com")}, "buyer.name"),
        ({"buyer": Buyer(name="Ann", email="ann.example.com")}, "buyer.email"),
        ({"buyer": Buyer(name="Ann", email="a@" + "b" * 250 + ".dk")}, "buyer.email"),
        ({"buyer": Buyer(name="Ann", email="ann@example.com", phone="1" * 41)}, "buyer.phone"),
        ({"comment": "x" * 2001}, "comment"),
        (
            {"event_slug": None, "attraction_slug": "m", "selected_seats": {45: [seat("A", 1)]}},
            "selected_seats",
        ),
        ({"visit_date": NOW.date()}, "visit_date"),
        ({"attendees": [_attendee(3)]}, "attendees[0]"),
        ({"attendees": [_attendee(1, ticket_type_id=46)]}, "attendees[0]"),
        ({"attendees": [_attendee(1), _attendee(1)]}, "attendees[1]"),
        ({"attendees": [_attendee(1, name="A" * 201)]}, "attendees[0].name"),
        ({"attendees": [_attendee(2, email="nobody")]}, "attendees[0].email"),
    ],
)
def test_a_malformed_request_is_refused_naming_the_field(changes: dict, field: str) -> None:
    with refused(InvalidCommand, "invalid_request", field):
        purchasing.validate_request(_request(**changes))


ONE_MAILBOX = ["ann@example.com", "a.b+tix@sub.example.co.uk", "jörg@bücher.de", "o'b@x.ie"]
NOT_ONE_MAILBOX = [
    "victim,attacker@example.com",  # two recipients in the confirmation's To header
    "<ann@example.com>",
    "(c)ann@example.com",
    "ann@example..com",
    "ann.@example.com",
    ".ann@example.com",
    "ann@-example.com",
    "ann@example.com.",
    "ann;x@example.com",
    '"ann"@example.com',
    "ann@[192.0.2.1]",
    "ann@example",
]


@pytest.mark.parametrize("email", ONE_MAILBOX)
def test_an_address_of_one_mailbox_is_taken(email: str) -> None:
    purchasing.validate_request(_request(buyer=Buyer(name="Ann", email=email)))


@pytest.mark.parametrize("email", NOT_ONE_MAILBOX)
def test_an_address_that_is_not_one_mailbox_is_refused(email: str) -> None:
    with refused(InvalidCommand, "invalid_request", "buyer.email"):
        purchasing.validate_request(_request(buyer=Buyer(name="Ann", email=email)))


def test_only_the_products_ticket_types_are_sold_each_up_to_its_limit() -> None:
    types = {45: ("Voksen", 2), 46: ("Barn", 8)}
    purchasing.check_ticket_types(_request(quantities={45: 2, 46: 8}), types)
    with refused(InvalidCommand, "invalid_request", "quantities.99"):
        purchasing.check_ticket_types(_request(quantities={99: 1}), types)
    with refused(InvalidCommand, "invalid_request", "quantities.45") as caught:
        purchasing.check_ticket_types(_request(quantities={45: 3}), types)
    assert caught.value.detail == "at most 2 Voksen per purchase"
