"""Refunds of a paid purchase's tickets, and the buyers' requests for them.

A refund is decided here on the purchase and its tickets' own states: which tickets (all that
are left, or those named), how much of the payment goes back (their prices less their share of
a discount, plus their service fee when the organization refunds it), and each ticket's
TicketRefunded. The sales desk (domain/purchase_settling.py `refund_tickets`) adds the seats or
places given back to the inventory, and the discount use once no ticket is left, in the same
append.

A refund request is an aggregate of its own (stream `refundrequest-<id>`): a buyer asks, the
partner approves it (the refund and the approval are one append) or declines it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from domain import streams
from domain.errors import DomainError, InvalidCommand, NotFound
from domain.events import Event
from domain.pricing import spread
from domain.purchasing import (
    PaymentDisputed,
    PurchasedTicket,
    PurchaseOpened,
    PurchaseState,
    RefundDecided,
    RefundMade,
    RefundReported,
)
from domain.tickets import TicketRefunded, TicketState, TicketWasScanned
from domain.transfers import TicketAlreadyTransferred

REASON_MAX = 500
RequestStatus = Literal["pending", "approved", "declined"]


class NotYetPaid(DomainError):
    code = "not_yet_paid"


class OrderInactive(DomainError):
    code = "order_inactive"


class AlreadyRefunded(DomainError):
    code = "already_refunded"


class RefundRequestClosed(DomainError):
    code = "refund_request_closed"


@dataclass(frozen=True)
class Refund:
    """What a refund decided, per stream (the purchase's RefundDecided or RefundReported, each
    ticket's TicketRefunded, an approved request), and the tickets whose seats or places go
    back; `whole`: no ticket of the purchase is left, so its discount use goes back too."""

    events: dict[str, list[Event]]
    returned: list[PurchasedTicket]
    whole: bool


def check_paid(purchase: PurchaseState | None) -> PurchaseState:
    """Only a paid purchase has anything to refund."""
    if purchase is None:
        raise NotFound("purchase not found", "token")
    if purchase.status == "pending_payment":
        raise NotYetPaid("the purchase is not paid yet")
    if purchase.status != "paid":
        raise OrderInactive(f"the purchase is {purchase.status}; nothing was kept to refund")
    return purchase


def check_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    if len(reason) > REASON_MAX:
        raise InvalidCommand(f"reason is too long: at most {REASON_MAX} characters", "reason")
    return reason.strip() or None


def ticket_amounts(
    purchase: PurchaseState, fees: Mapping[int, int], refund_fee: bool
) -> dict[int, int]:
    """What each ticket gave of the payment: its price less its share of the discount, plus
    its service fee (`fees`, as issued) when the organization refunds fees."""
    tickets = purchase.opened.tickets
    return {
        t.id: t.amount_cents - off + (fees.get(t.id, 0) if refund_fee else 0)
        for t, off in zip(tickets, _discount_shares(purchase.opened), strict=True)
    }


def _discount_shares(opened: PurchaseOpened) -> list[int]:
    """Each ticket's own share (`pricing.ticket_shares`: nothing of a discount on other ticket
    types), or, in a purchase opened before those were kept, in proportion to the prices."""
    if all(t.discount_cents is not None for t in opened.tickets):
        return [t.discount_cents or 0 for t in opened.tickets]
    prices = [t.amount_cents for t in opened.tickets]
    return spread(sum(prices), prices, opened.pricing.discount_cents)


def _chosen(purchase: PurchaseState, ticket_ids: list[int] | None) -> list[PurchasedTicket]:
    tickets = purchase.opened.tickets
    if ticket_ids is None:
        left = [t for t in tickets if t.id not in purchase.refunded_tickets]
        if not left:
            raise AlreadyRefunded("every ticket of the purchase is refunded")
        return left
    if not ticket_ids:
        raise InvalidCommand("name at least one ticket, or leave ticket_ids out", "ticket_ids")
    by_id = {t.id: t for t in tickets}
    chosen = []
    for i, ticket_id in enumerate(ticket_ids):
        if ticket_id not in by_id:
            raise InvalidCommand("no such ticket in the purchase", f"ticket_ids[{i}]")
        if ticket_id in ticket_ids[:i]:
            raise InvalidCommand("ticket given twice", f"ticket_ids[{i}]")
        if ticket_id in purchase.refunded_tickets:
            raise AlreadyRefunded(f"ticket {ticket_id} is already refunded")
        chosen.append(by_id[ticket_id])
    return chosen


def _ticket_refunds(
    chosen: Iterable[PurchasedTicket], refund_id: str, reason: str | None
) -> dict[str, list[Event]]:
    return {
        streams.ticket(t.id): [TicketRefunded(ticket_id=t.id, refund_id=refund_id, reason=reason)]
        for t in chosen
    }


def decide_refund(
    purchase: PurchaseState | None,
    tickets: Mapping[int, TicketState | None],
    ticket_ids: list[int] | None,
    *,
    refund_id: str,
    reason: str | None,
    by: str,
    force: bool,
    refund_fee: bool,
) -> Refund:
    """Refund the named tickets (all that are left for None). A scanned ticket is refused
    unless `force`; the amount never exceeds what is left of the payment."""
    state = check_paid(purchase)
    reason = check_reason(reason)
    chosen = _chosen(state, ticket_ids)
    for t in chosen:
        ticket = tickets.get(t.id)
        if ticket is not None and ticket.scan_count and not force:
            raise TicketWasScanned(f"ticket {t.id} was scanned; refund it with force")
    fees = {tid: s.issued.service_fee_cents for tid, s in tickets.items() if s is not None}
    amounts = ticket_amounts(state, fees, refund_fee)
    left = state.opened.pricing.total_cents - state.refunded_cents
    amount = min(sum(amounts[t.id] for t in chosen), max(left, 0))
    decided = RefundDecided(
        token=state.opened.token,
        refund_id=refund_id,
        ticket_ids=[t.id for t in chosen],
        amount_cents=amount,
        reason=reason,
        by=by,
        intent_id=state.intent_id,
    )
    return Refund(
        events={streams.purchase(state.opened.token): [decided]}
        | _ticket_refunds(chosen, refund_id, reason),
        returned=chosen,
        whole=len(state.refunded_tickets) + len(chosen) == len(state.opened.tickets),
    )


class PaymentNotRecorded(DomainError):
    """A refund reported before the payment it gives back (Stripe does not promise its events'
    order): refused, so Stripe delivers it again, after the payment's report. Answered with a
    200, it was lost, and the payment that came next kept the tickets of money given back."""

    code = "payment_not_recorded"


def report_refund(
    purchase: PurchaseState, charge_refunded_cents: int, *, refund_id: str
) -> Refund | None:
    """Stripe says `charge_refunded_cents` of the payment is refunded in all: what exceeds what
    the purchase has recorded was refunded outside the API (Stripe's dashboard). A full refund
    takes every ticket not refunded yet with it; a partial one records the amount alone, as it
    names no ticket. None when there is nothing new (the report of a refund made here)."""
    if purchase.status != "paid":
        if purchase.refund_decision is None and charge_refunded_cents > 0:
            raise PaymentNotRecorded(
                "Stripe reports a refund of a payment whose own report has not come yet"
            )
        return None
    opened = purchase.opened
    # No more than was paid: a charge refunded beyond it is not this payment's (a forged report).
    more = min(charge_refunded_cents, opened.pricing.total_cents) - purchase.refunded_cents
    if more <= 0:
        return None
    full = charge_refunded_cents >= opened.pricing.total_cents
    chosen = [t for t in opened.tickets if full and t.id not in purchase.refunded_tickets]
    reported = RefundReported(
        token=opened.token,
        refund_id=refund_id,
        ticket_ids=[t.id for t in chosen],
        amount_cents=more,
        charge_refunded_cents=charge_refunded_cents,
    )
    return Refund(
        events={streams.purchase(opened.token): [reported]}
        | _ticket_refunds(chosen, refund_id, "refunded at Stripe"),
        returned=chosen,
        whole=bool(chosen),
    )


# ---- refund requests ---------------------------------------------------------------------


class RefundRequested(Event, frozen=True):
    request_id: str
    organization_id: int
    purchase_token: str
    ticket_id: int
    ticket_code: str
    reason: str | None
    requested_at: datetime


class RefundRequestApproved(Event, frozen=True):
    request_id: str
    refund_id: str
    decided_at: datetime


class RefundRequestDeclined(Event, frozen=True):
    request_id: str
    reason: str | None
    decided_at: datetime


@dataclass
class RefundRequestState:
    requested: RefundRequested
    status: RequestStatus = "pending"
    refund_id: str | None = None
    decline_reason: str | None = None
    decided_at: datetime | None = None


def evolve_refund_request(
    state: RefundRequestState | None, event: Event
) -> RefundRequestState | None:
    match event:
        case RefundRequested():
            return RefundRequestState(requested=event)
        case RefundRequestApproved() if state:
            state.status, state.refund_id = "approved", event.refund_id
            state.decided_at = event.decided_at
        case RefundRequestDeclined() if state:
            state.status, state.decline_reason = "declined", event.reason
            state.decided_at = event.decided_at
    return state


def replay_refund_request(events: Iterable[Event]) -> RefundRequestState | None:
    state = None
    for event in events:
        state = evolve_refund_request(state, event)
    return state


def request_refund(
    purchase: PurchaseState | None,
    ticket: TicketState | None,
    *,
    request_id: str,
    reason: str | None,
    now: datetime,
) -> list[Event]:
    """A buyer asks for a ticket's refund: only of a paid purchase, for a ticket neither
    refunded nor scanned (a partner may still force a scanned one), and still theirs: one
    passed on is its new holder's, whose ticket the buyer's e-mail no longer speaks for."""
    state = check_paid(purchase)
    if ticket is None:
        raise NotFound("ticket not found", "code")
    if ticket.transfers:
        raise TicketAlreadyTransferred("the ticket was passed on to another holder")
    if ticket.refunded_by is not None:
        raise AlreadyRefunded("the ticket is already refunded")
    if ticket.scan_count:
        raise TicketWasScanned("the ticket was scanned")
    return [
        RefundRequested(
            request_id=request_id,
            organization_id=state.opened.organization_id,
            purchase_token=state.opened.token,
            ticket_id=ticket.issued.ticket_id,
            ticket_code=ticket.code,
            reason=check_reason(reason),
            requested_at=now,
        )
    ]


def approve_request(
    request: RefundRequestState | None,
    purchase: PurchaseState | None,
    tickets: Mapping[int, TicketState | None],
    *,
    refund_id: str,
    refund_fee: bool,
    now: datetime,
) -> Refund:
    """The partner approves a buyer's request: its ticket is refunded (a scanned one is
    refused: only the partner's own refund may force it, and one passed on since the request
    is no longer the buyer's) and the request approved, at once."""
    approved = approve(request, refund_id, now)
    assert request is not None
    ticket = tickets.get(request.requested.ticket_id)
    if ticket is not None and ticket.transfers:
        # Asked while the ticket was the buyer's; passed on since, it is its new holder's.
        raise TicketAlreadyTransferred("the ticket was passed on to another holder")
    refund = decide_refund(
        purchase,
        tickets,
        [request.requested.ticket_id],
        refund_id=refund_id,
        reason=request.requested.reason,
        by="buyer",
        force=False,
        refund_fee=refund_fee,
    )
    stream = streams.refund_request(request.requested.request_id)
    return replace(refund, events=refund.events | {stream: approved})


def _pending(state: RefundRequestState | None) -> RefundRequestState:
    if state is None:
        raise NotFound("refund request not found", "request_id")
    if state.status != "pending":
        raise RefundRequestClosed(f"the refund request is already {state.status}")
    return state


def approve(state: RefundRequestState | None, refund_id: str, now: datetime) -> list[Event]:
    pending = _pending(state)
    return [
        RefundRequestApproved(
            request_id=pending.requested.request_id, refund_id=refund_id, decided_at=now
        )
    ]


def decline(state: RefundRequestState | None, reason: str | None, now: datetime) -> list[Event]:
    pending = _pending(state)
    return [
        RefundRequestDeclined(
            request_id=pending.requested.request_id, reason=check_reason(reason), decided_at=now
        )
    ]


def record_made(state: PurchaseState, refund_id: str, stripe_refund_id: str) -> list[Event]:
    """The refund Stripe made for a RefundDecided; once."""
    if refund_id not in state.ticket_refunds or refund_id in state.refunds_made:
        return []
    return [
        RefundMade(token=state.opened.token, refund_id=refund_id, stripe_refund_id=stripe_refund_id)
    ]


def record_dispute(
    state: PurchaseState,
    *,
    dispute_id: str,
    intent_id: str,
    amount_cents: int,
    reason: str | None,
    status: str | None,
) -> list[Event]:
    """A dispute of the purchase's payment, once per dispute."""
    if dispute_id in state.disputes:
        return []
    opened = state.opened
    return [
        PaymentDisputed(
            token=opened.token,
            organization_id=opened.organization_id,
            dispute_id=dispute_id,
            intent_id=intent_id,
            amount_cents=amount_cents,
            currency=opened.pricing.currency,
            reason=reason or "general",
            status=status or "needs_response",
        )
    ]
