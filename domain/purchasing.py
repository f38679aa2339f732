"""A purchase: opened together with the holds it needs, then paid, cancelled or expired. The
request is validated here, field by field, before anything is held."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import msgspec

from domain.errors import DomainError, InvalidCommand, NotFound
from domain.events import Event
from domain.fields import printable
from domain.inventory.events import SeatRef
from domain.pricing import Pricing

# An address as one mailbox: a dot-atom local part and a domain of dotted labels (RFC 5322's
# addr-spec without quoted strings, comments or brackets; letters beyond ASCII welcome, as
# SMTPUTF8 and IDNA carry them). Anything looser reached the confirmation's To header as it was:
# `victim,attacker@example.com` mailed two people.
_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s])"
_ALNUM = r"(?:[A-Za-z0-9]|[^\x00-\x7f\s])"
_LABEL = rf"{_ALNUM}(?:(?:{_ALNUM}|-)*{_ALNUM})?"
EMAIL = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})+\Z")
MAX_TICKETS = 20
# Text limits of a purchase: names as the buyer API's attendee edits (200), an address as
# RFC 5321 allows (254), a phone number with room for its formatting.
NAME_MAX = 200
EMAIL_MAX = 254
PHONE_MAX = 40
COMMENT_MAX = 2000
PurchaseStatus = Literal["pending_payment", "paid", "cancelled", "expired"]
# What the payment provider reports of a purchase's payment, in the purchase's own words (the
# adapter translates the provider's event types into these).
PaymentReport = Literal["succeeded", "failed", "refunded", "disputed"]


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: a field the spec does not know is a 422, not silently dropped."""


class Buyer(Request, frozen=True):
    name: str
    email: str
    phone: str | None = None


class Attendee(Request, frozen=True):
    ticket_type_id: int
    index: int
    name: str | None = None
    email: str | None = None


class PurchaseRequest(Request, frozen=True):
    quantities: dict[int, int]
    buyer: Buyer
    event_slug: str | None = None
    attraction_slug: str | None = None
    attendees: list[Attendee] = []
    selected_seats: dict[int, list[SeatRef]] | None = None
    visit_date: date | None = None
    discount_code: str | None = None
    comment: str | None = None


class PurchasedTicket(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    code: str
    attendee_token: str
    ticket_type_id: int
    ticket_type_name: str
    amount_cents: int
    seat: SeatRef | None
    name: str | None
    email: str | None
    named: bool = False
    # The ticket's part of the purchase's discount and service fee (`pricing.ticket_shares`);
    # None in purchases opened before they were kept, whose parts are worked out as then.
    discount_cents: int | None = None
    fee_cents: int | None = None


class PurchaseOpened(Event, frozen=True):
    token: str
    organization_id: int
    api_key_id: int | None
    event_id: int | None
    attraction_id: int | None
    product_slug: str
    product_name: str
    visit_date: date | None
    buyer: Buyer
    tickets: list[PurchasedTicket]
    pricing: Pricing
    discount_id: int | None
    stripe_account_id: str | None
    comment: str | None
    access_code: str
    opened_at: datetime
    expires_at: datetime


class PaymentIntentCreated(Event, frozen=True):
    token: str
    intent_id: str
    client_secret: str


class PurchasePaid(Event, frozen=True):
    token: str
    paid_at: datetime
    intent_id: str | None
    late: bool = False


class PaymentFailed(Event, frozen=True):
    token: str
    intent_id: str
    reason: str


class PurchaseCancelled(Event, frozen=True):
    token: str
    reason: str


class PurchaseExpired(Event, frozen=True):
    token: str


class LatePaymentRefundDecided(Event, frozen=True):
    """A payment arrived when its seats were gone: it is given back, never kept and never lost.
    Stored before anything is asked of Stripe; the payments worker
    (services/workers/payment_effects.py) makes the refund once this is stored, and only then."""

    token: str
    intent_id: str
    reason: str


def late_payment_refund_id(token: str) -> str:
    """The id a late payment's refund is listed and mailed by (there is one per purchase)."""
    return f"late-payment-{token}"


class LatePaymentRefunded(Event, frozen=True):
    """Stripe made the refund a LatePaymentRefundDecided called for. Streams written before
    that event existed have this one alone: the refund was made on the webhook's path then."""

    token: str
    intent_id: str
    refund_id: str
    reason: str


class RefundDecided(Event, frozen=True):
    """Tickets of a paid purchase are refunded (domain/refunds.py decides which and how much).
    Stored before anything is asked of Stripe; the payments worker then refunds `amount_cents`
    (key `refund-<refund_id>`) and records RefundMade. `by`: "partner", or "buyer" for an
    approved refund request."""

    token: str
    refund_id: str
    ticket_ids: list[int]
    amount_cents: int
    reason: str | None
    by: str
    intent_id: str | None


class RefundReported(Event, frozen=True):
    """Stripe reports money given back that no RefundDecided asked for (a refund made in its
    dashboard): `amount_cents` more refunded, and on a full refund every ticket not refunded
    yet (`ticket_ids`). Nothing is asked of Stripe: the money has already gone."""

    token: str
    refund_id: str
    ticket_ids: list[int]
    amount_cents: int
    charge_refunded_cents: int


class RefundMade(Event, frozen=True):
    """Stripe made the refund a RefundDecided called for."""

    token: str
    refund_id: str
    stripe_refund_id: str


class PaymentDisputed(Event, frozen=True):
    """The buyer's bank disputes the payment (a chargeback): the partner has to answer it."""

    token: str
    organization_id: int
    dispute_id: str
    intent_id: str
    amount_cents: int
    currency: str
    reason: str
    status: str


class AlreadyPaid(DomainError):
    code = "already_paid"


@dataclass
class PurchaseState:
    opened: PurchaseOpened
    status: PurchaseStatus = "pending_payment"
    intent_id: str | None = None
    client_secret: str | None = None
    paid_at: datetime | None = None
    stripe_status: str | None = None
    # True from the refund's decision on: the money is not kept, whether or not Stripe has
    # made the refund yet (refund_id says it has).
    refunded: bool = False
    refund_decision: LatePaymentRefundDecided | None = None
    refund_id: str | None = None
    # Refunds of a paid purchase's tickets: decided here (and Stripe's refund id once made),
    # or reported by Stripe; the tickets they covered; what they gave back in all.
    ticket_refunds: dict[str, RefundDecided] = field(default_factory=dict)
    reported_refunds: dict[str, RefundReported] = field(default_factory=dict)
    refunds_made: dict[str, str] = field(default_factory=dict)
    refunded_tickets: set[int] = field(default_factory=set)
    refunded_cents: int = 0
    disputes: dict[str, PaymentDisputed] = field(default_factory=dict)


def evolve_purchase(state: PurchaseState | None, event: Event) -> PurchaseState | None:
    match event:
        case PurchaseOpened():
            return PurchaseState(opened=event)
        case PaymentIntentCreated() if state:
            state.intent_id, state.client_secret = event.intent_id, event.client_secret
            state.stripe_status = "requires_payment_method"
        case PurchasePaid() if state:
            state.status, state.paid_at, state.stripe_status = "paid", event.paid_at, "succeeded"
        case PaymentFailed() if state:
            state.stripe_status = "requires_payment_method"
        case PurchaseCancelled() | PurchaseExpired() if state:
            state.status = "cancelled" if isinstance(event, PurchaseCancelled) else "expired"
            if state.intent_id is not None:  # the ending voids the PaymentIntent at Stripe
                state.stripe_status = "canceled"
        case LatePaymentRefundDecided() if state:
            state.refunded, state.refund_decision = True, event
            state.stripe_status = "refund_pending"
            state.refunded_cents = state.opened.pricing.total_cents  # the whole payment
        case LatePaymentRefunded() if state:
            state.refunded, state.refund_id, state.stripe_status = True, event.refund_id, "refunded"
            state.refunded_cents = state.opened.pricing.total_cents
        case RefundDecided() | RefundReported() if state:
            if isinstance(event, RefundDecided):
                state.ticket_refunds[event.refund_id] = event
            else:
                state.reported_refunds[event.refund_id] = event
            state.refunded_tickets.update(event.ticket_ids)
            state.refunded_cents += event.amount_cents
        case RefundMade() if state:
            state.refunds_made[event.refund_id] = event.stripe_refund_id
        case PaymentDisputed() if state:
            state.disputes[event.dispute_id] = event
    return state


def replay_purchase(events: Iterable[Event]) -> PurchaseState | None:
    """The purchase as its stream's events leave it; None for a stream with none."""
    state = None
    for event in events:
        state = evolve_purchase(state, event)
    return state


def validate_request(req: PurchaseRequest) -> None:
    """Everything that can be checked without the catalog."""
    if (req.event_slug is None) == (req.attraction_slug is None):
        raise InvalidCommand("give exactly one of event_slug and attraction_slug", "event_slug")
    for tid, n in req.quantities.items():
        if n < 0:
            raise InvalidCommand("quantities must not be negative", f"quantities.{tid}")
    total = sum(req.quantities.values())
    if not 1 <= total <= MAX_TICKETS:
        raise InvalidCommand(f"total quantity must be 1..{MAX_TICKETS}", "quantities")
    if not req.buyer.name.strip():
        raise InvalidCommand("buyer name is required", "buyer.name")
    _at_most(req.buyer.name, NAME_MAX, "buyer.name")
    printable(req.buyer.name, "buyer.name")
    _at_most(req.buyer.email, EMAIL_MAX, "buyer.email")
    if not EMAIL.match(req.buyer.email):
        raise InvalidCommand("not a valid e-mail address", "buyer.email")
    _at_most(req.buyer.phone, PHONE_MAX, "buyer.phone")
    printable(req.buyer.phone, "buyer.phone")
    _at_most(req.comment, COMMENT_MAX, "comment")
    if req.attraction_slug is not None and req.selected_seats:
        raise InvalidCommand("attractions have no seats", "selected_seats")
    if req.event_slug is not None and req.visit_date is not None:
        raise InvalidCommand("visit_date is for attractions", "visit_date")
    if req.visit_date is not None and not visitable(req.visit_date):
        raise InvalidCommand("out of range", "visit_date")
    seen: set[tuple[int, int]] = set()
    for i, a in enumerate(req.attendees):
        field = f"attendees[{i}]"
        if not 1 <= a.index <= req.quantities.get(a.ticket_type_id, 0):
            raise InvalidCommand("no such ticket in quantities", field)
        if (a.ticket_type_id, a.index) in seen:
            raise InvalidCommand("attendee given twice", field)
        _at_most(a.name, NAME_MAX, f"{field}.name")
        printable(a.name, f"{field}.name")
        _at_most(a.email, EMAIL_MAX, f"{field}.email")
        if a.email is not None and a.email != "" and not EMAIL.match(a.email):
            raise InvalidCommand("not a valid e-mail address", f"{field}.email")
        seen.add((a.ticket_type_id, a.index))


def visitable(day: date) -> bool:
    """A day a visit can be for: a ticket is valid until the day after its visit, which must
    be a date too."""
    return day < date.max


def _at_most(value: str | None, limit: int, field: str) -> None:
    """A text over its limit is refused as too long (not as missing or malformed), naming the
    field: the partner's form can then say what to shorten."""
    if value is not None and len(value) > limit:
        raise InvalidCommand(f"{field} is too long: at most {limit} characters", field)


def check_ticket_types(
    req: PurchaseRequest, types: dict[int, tuple[str, int]], field: str = "quantities"
) -> None:
    """`types`: id → (name, max_per_purchase) of the product's ticket types."""
    for tid, n in req.quantities.items():
        if tid not in types:
            raise InvalidCommand(f"ticket type {tid} is not sold here", f"{field}.{tid}")
        if n > types[tid][1]:
            raise InvalidCommand(
                f"at most {types[tid][1]} {types[tid][0]} per purchase", f"{field}.{tid}"
            )


def cancel(state: PurchaseState | None, reason: str) -> list[Event]:
    """The partner's cancel: only unpaid, open purchases; a second cancel finds nothing."""
    if state is None or state.status in ("cancelled", "expired"):
        raise NotFound("purchase not found", "token")
    if state.status == "paid":
        raise AlreadyPaid("the purchase is paid; refund it instead")
    return [PurchaseCancelled(token=state.opened.token, reason=reason)]


def expire(state: PurchaseState, now: datetime) -> list[Event]:
    if state.status != "pending_payment" or now < state.opened.expires_at:
        return []
    return [PurchaseExpired(token=state.opened.token)]


def its_payment(
    state: PurchaseState, intent_id: str, amount: int | None = None, currency: str | None = None
) -> bool:
    """Whether a Stripe report is about this purchase's own money: its PaymentIntent (and, for
    a payment, the purchase's total, in its currency when the report names one). The report's
    metadata names the purchase, but metadata can name any purchase; the intent is the one the
    purchase stored when it was created."""
    if state.intent_id is None or intent_id != state.intent_id:
        return False
    if amount is None:
        return True
    pricing = state.opened.pricing
    same_currency = currency is None or currency.upper() == pricing.currency.upper()
    return amount == pricing.total_cents and same_currency


def pay(
    state: PurchaseState, intent_id: str | None, now: datetime, late: bool = False
) -> list[Event]:
    """Nothing for a purchase already paid, or whose payment it was decided to give back: a
    purchase is paid or refunded, never both."""
    if state.status == "paid" or state.refunded:
        return []
    return [PurchasePaid(token=state.opened.token, paid_at=now, intent_id=intent_id, late=late)]


def decide_late_refund(state: PurchaseState, intent_id: str, reason: str) -> list[Event]:
    """Give back a payment that came after the purchase let go of what it held (`reason`: why
    it could not be held again). Nothing for a paid purchase or a refund already decided, so of
    any number of deliveries of one payment at most one refund is decided."""
    if state.status in ("paid", "pending_payment") or state.refunded:
        return []
    return [LatePaymentRefundDecided(token=state.opened.token, intent_id=intent_id, reason=reason)]


def record_refund(state: PurchaseState, refund_id: str) -> list[Event]:
    """The refund Stripe made for the purchase's decision; once."""
    decision = state.refund_decision
    if decision is None or state.refund_id is not None:
        return []
    return [
        LatePaymentRefunded(
            token=decision.token,
            intent_id=decision.intent_id,
            refund_id=refund_id,
            reason=decision.reason,
        )
    ]
