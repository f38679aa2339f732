"""Tickets as aggregates of their own: issued when their purchase is paid (in the same append),
scanned at the gate once, and personalised by the buyer until the event starts. Every change is
an event on the ticket's stream, so N gates scanning one ticket at once admit exactly one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from domain import streams
from domain.errors import DomainError, InvalidCommand
from domain.events import Event
from domain.inventory.events import SeatRef
from domain.purchasing import EMAIL, PurchaseOpened

Reason = Literal[
    "ok", "already_scanned", "refunded", "resold", "cancelled", "pending_payment", "expired"
]
SCANNABLE_AFTER_START = timedelta(hours=6)


class TicketIssued(Event, frozen=True):
    ticket_id: int
    purchase_token: str
    organization_id: int
    code: str
    attendee_token: str
    ticket_type_id: int
    ticket_type_name: str
    event_id: int | None
    attraction_id: int | None
    product_slug: str
    product_name: str
    visit_date: date | None
    seat: SeatRef | None
    holder_name: str | None
    holder_email: str | None
    starts_at: datetime | None
    needs_personalization: bool
    personalization_end: datetime | None
    price_cents: int
    service_fee_cents: int
    currency: str
    scannable_until: datetime | None
    issued_at: datetime


class TicketScanned(Event, frozen=True):
    ticket_id: int
    scanned_at: datetime
    api_key_id: int | None


class AttendeeUpdated(Event, frozen=True):
    ticket_id: int
    name: str | None
    email: str | None


class PersonalizationClosed(DomainError):
    code = "personalization_closed"


@dataclass
class TicketState:
    issued: TicketIssued
    scan_count: int = 0
    holder_name: str | None = None
    holder_email: str | None = None
    personalized: bool = False

    @property
    def status(self) -> str:
        return "scanned" if self.scan_count else "valid"

    @property
    def needs_personalization(self) -> bool:
        return self.issued.needs_personalization and not self.personalized


def evolve_ticket(state: TicketState | None, event: Event) -> TicketState | None:
    match event:
        case TicketIssued():
            return TicketState(
                issued=event, holder_name=event.holder_name, holder_email=event.holder_email
            )
        case TicketScanned() if state:
            state.scan_count += 1
        case AttendeeUpdated() if state:
            state.holder_name, state.holder_email = event.name, event.email
            state.personalized = event.name is not None
    return state


def replay_ticket(events: Iterable[Event]) -> TicketState | None:
    """The ticket as its stream's events leave it; None before it is issued."""
    state = None
    for event in events:
        state = evolve_ticket(state, event)
    return state


def visit_day_end(visit_date: date, zone: str) -> datetime:
    """The first instant after a visit day in the organization's zone (its local midnight, as
    UTC): a visitor on the museum's last evening is still inside their day."""
    local = datetime.combine(visit_date + timedelta(days=1), time(), tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC)


def scannable_until(starts_at: datetime | None, ends_at: datetime | None) -> datetime | None:
    """Gates close six hours after an event starts (or when it ends, if later). A product
    without a start (an attraction) is good until it ends: its visit day's end
    (`visit_day_end`), or without a visit date, no limit."""
    if starts_at is not None:
        return max(ends_at or starts_at, starts_at + SCANNABLE_AFTER_START)
    return ends_at


def issue_tickets(
    opened: PurchaseOpened,
    now: datetime,
    *,
    starts_at: datetime | None,
    ends_at: datetime | None,
    named: set[int],
) -> dict[str, list[Event]]:
    """One TicketIssued per ticket of a paid purchase. `named`: ticket ids whose attendee was
    given at purchase; the others need personalization until the event starts. `ends_at` of a
    dated attraction visit is its `visit_day_end`."""
    tickets = opened.tickets
    fee_share = _shares(opened.pricing.fee_cents, len(tickets))
    until = scannable_until(starts_at, ends_at)
    return {
        streams.ticket(t.id): [
            TicketIssued(
                ticket_id=t.id,
                purchase_token=opened.token,
                organization_id=opened.organization_id,
                code=t.code,
                attendee_token=t.attendee_token,
                ticket_type_id=t.ticket_type_id,
                ticket_type_name=t.ticket_type_name,
                event_id=opened.event_id,
                attraction_id=opened.attraction_id,
                product_slug=opened.product_slug,
                product_name=opened.product_name,
                visit_date=opened.visit_date,
                seat=t.seat,
                holder_name=t.name,
                holder_email=t.email,
                starts_at=starts_at,
                needs_personalization=t.id not in named and starts_at is not None,
                personalization_end=starts_at,
                price_cents=t.amount_cents,
                service_fee_cents=fee,
                currency=opened.pricing.currency,
                scannable_until=until,
                issued_at=now,
            )
        ]
        for t, fee in zip(tickets, fee_share, strict=True)
    }


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` integers that differ by at most one and add up exactly."""
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def admission(state: TicketState, now: datetime) -> Reason:
    if state.scan_count:
        return "already_scanned"
    until = state.issued.scannable_until
    if until is not None and now >= until:
        return "expired"
    return "ok"


def scan(state: TicketState, now: datetime, api_key_id: int | None) -> tuple[Reason, list[Event]]:
    reason = admission(state, now)
    if reason != "ok":
        return reason, []
    return reason, [
        TicketScanned(ticket_id=state.issued.ticket_id, scanned_at=now, api_key_id=api_key_id)
    ]


def update_attendee(
    state: TicketState, name: str | None, email: str | None, now: datetime, field: str
) -> list[Event]:
    """Empty strings clear. Refused after the personalization window or once scanned."""
    name = name.strip() if name else None
    email = email.strip() if email else None
    if name is not None and len(name) > 200:
        raise InvalidCommand("name is longer than 200 characters", f"{field}.name")
    if email is not None and (len(email) > 254 or not EMAIL.match(email)):
        raise InvalidCommand("not a valid e-mail address", f"{field}.email")
    end = state.issued.personalization_end
    if (end is not None and now >= end) or state.scan_count:
        raise PersonalizationClosed("attendee details can no longer be changed")
    if (name, email) == (state.holder_name, state.holder_email):
        return []
    return [AttendeeUpdated(ticket_id=state.issued.ticket_id, name=name, email=email)]
