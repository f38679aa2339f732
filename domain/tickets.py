"""Tickets as aggregates of their own: issued when their purchase is paid (in the same append),
scanned at the gate once, personalised inside the event's window (domain/personalization.py),
refunded, or transferred to a new holder under a new code. Every change is an event on the
ticket's stream, so N gates scanning one ticket at once admit exactly one, and of a refund and a
scan at once one wins."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec

from domain import streams
from domain.catalog import ConsumerField, EventScheduled, TicketTerms
from domain.errors import DomainError
from domain.events import Event
from domain.inventory.events import SeatRef
from domain.purchasing import PurchaseOpened

Reason = Literal[
    "ok", "already_scanned", "refunded", "resold", "cancelled", "pending_payment", "expired"
]
SCANNABLE_AFTER_START = timedelta(hours=6)
TicketStatus = Literal["valid", "scanned", "refunded"]


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """When a product's tickets are good, and what its event allows after the sale."""

    starts_at: datetime | None = None
    ends_at: datetime | None = None
    terms: TicketTerms = TicketTerms()


class Consumer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The person a ticket is for, with what the event asks of them (the ticket resource's
    `consumer`)."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    date_of_birth: date | None = None
    gender: int | None = None
    address: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country: str | None = None
    state: str | None = None
    realm: str | None = None
    language: str | None = None

    @property
    def name(self) -> str | None:
        full = " ".join(p for p in (self.first_name, self.last_name) if p)
        return full or None

    @classmethod
    def named(cls, name: str | None, email: str | None) -> Consumer:
        """A consumer from one name as a buyer typed it: the last word is the last name."""
        first, _, last = (name or "").strip().rpartition(" ")
        if not first:
            first, last = last, ""
        return cls(first_name=first or None, last_name=last or None, email=email)


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
    # Whether no attendee was named at purchase: kept as stored; what the ticket needs is
    # decided from its consumer (TicketState.needs_personalization).
    needs_personalization: bool
    personalization_end: datetime | None
    price_cents: int
    service_fee_cents: int
    currency: str
    scannable_until: datetime | None
    issued_at: datetime
    # The event's terms as they stood at issue, the personalization window resolved.
    terms: TicketTerms = TicketTerms()
    personalization_start: datetime | None = None
    # Whether the holder is someone named at purchase, not the buyer filled in for the seat
    # (the buyer's pages show an unnamed seat as null); tickets issued before it: named.
    holder_named: bool = True


class TicketScanned(Event, frozen=True):
    ticket_id: int
    scanned_at: datetime
    api_key_id: int | None


class AttendeeUpdated(Event, frozen=True):
    ticket_id: int
    name: str | None
    email: str | None


class ConsumerUpdated(Event, frozen=True):
    """The consumer's details as they now stand, and who gave them ("partner" or "buyer"; the
    API key and request are in the event's metadata)."""

    ticket_id: int
    consumer: Consumer
    by: str


class TicketRefunded(Event, frozen=True):
    """The ticket's money is given back (by the refund `refund_id` on its purchase): it no
    longer admits anyone."""

    ticket_id: int
    refund_id: str
    reason: str | None = None


class TicketTransferOffered(Event, frozen=True):
    """The ticket is offered to someone by the transfer `transfer_id` (domain/transfers.py):
    recorded on the ticket too, so that of two offers at once one wins, and an accept decided
    before a later offer no longer applies."""

    ticket_id: int
    transfer_id: str


class TicketTransferred(Event, frozen=True):
    """The ticket now belongs to `consumer`, under `new_code` (and a new attendee token): the
    old code answers `resold`, and every PDF, link and pass made for it stops working."""

    ticket_id: int
    transfer_id: str
    new_code: str
    new_attendee_token: str
    consumer: Consumer


class TicketWasScanned(DomainError):
    """A refund (unless forced) or a transfer of a ticket that let someone in."""

    code = "ticket_scanned"


class TicketWasRefunded(DomainError):
    """Its PDF, e-ticket and pass are no longer handed out, nor is it transferred."""

    code = "ticket_refunded"


@dataclass
class TicketState:
    issued: TicketIssued
    code: str
    attendee_token: str
    consumer: Consumer
    # Whether someone was named for the ticket (at purchase, by an edit or a transfer), so
    # its consumer is not just the buyer's details filled in.
    named: bool = True
    scan_count: int = 0
    refunded_by: str | None = None
    # Every code the ticket had before its current one (each answers `resold`).
    former_codes: tuple[str, ...] = ()
    transfers: int = 0
    # Every transfer ever offered for the ticket, the latest last.
    transfer_offers: tuple[str, ...] = ()

    @property
    def status(self) -> TicketStatus:
        if self.refunded_by is not None:
            return "refunded"
        return "scanned" if self.scan_count else "valid"

    @property
    def holder_name(self) -> str | None:
        return self.consumer.name

    @property
    def holder_email(self) -> str | None:
        return self.consumer.email

    @property
    def required_fields(self) -> list[ConsumerField]:
        policy = self.issued.terms.personalization
        if policy is not None:
            return policy.required
        # Without a policy of the event, a ticket asks for a name while its window is open.
        return ["first_name"] if self.issued.personalization_end is not None else []

    @property
    def needs_personalization(self) -> bool:
        """True while a field the event asks for is missing from the consumer as the ticket
        shows it (the buyer's name until someone else's is given; clearing one makes it true
        again), and the ticket can still be personalized: not once refunded or scanned."""
        return self.status == "valid" and any(
            getattr(self.consumer, f) in (None, "") for f in self.required_fields
        )

    def needs_personalization_at(self, now: datetime) -> bool:
        """As `needs_personalization`, but never once its window has closed: nothing can be
        given any more, so a partner's page should stop asking for it."""
        end = self.issued.personalization_end
        return self.needs_personalization and (end is None or now < end)


def evolve_ticket(state: TicketState | None, event: Event) -> TicketState | None:
    match event:
        case TicketIssued():
            return TicketState(
                issued=event,
                code=event.code,
                attendee_token=event.attendee_token,
                consumer=Consumer.named(event.holder_name, event.holder_email),
                named=event.holder_named,
            )
        case TicketScanned() if state:
            state.scan_count += 1
        case AttendeeUpdated() if state:
            state.named = True
            state.consumer = msgspec.structs.replace(
                Consumer.named(event.name, event.email),
                **_beyond_name(state.consumer),
            )
        case ConsumerUpdated() if state:
            state.consumer, state.named = event.consumer, True
        case TicketRefunded() if state:
            state.refunded_by = event.refund_id
        case TicketTransferred() if state:
            state.former_codes += (state.code,)
            state.code, state.attendee_token = event.new_code, event.new_attendee_token
            state.consumer, state.named = event.consumer, True
            state.transfers += 1
        case TicketTransferOffered() if state:
            state.transfer_offers += (event.transfer_id,)
    return state


def _beyond_name(consumer: Consumer) -> dict[str, object]:
    """What an attendee edit (name and e-mail only) leaves of the consumer's details."""
    kept = msgspec.structs.asdict(consumer)
    for name in ("first_name", "last_name", "email"):
        kept.pop(name)
    return kept


def replay_ticket(events: Iterable[Event]) -> TicketState | None:
    """The ticket as its stream's events leave it; None before it is issued."""
    state = None
    for event in events:
        state = evolve_ticket(state, event)
    return state


def visit_day_start(visit_date: date, zone: str) -> datetime:
    """A visit day's local midnight in the organization's zone, as UTC: when a visitor's day
    begins, as the buyer's pages show it."""
    return datetime.combine(visit_date, time(), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def visit_day_end(visit_date: date, zone: str) -> datetime:
    """The first instant after a visit day in the organization's zone (its local midnight, as
    UTC): a visitor on the museum's last evening is still inside their day."""
    local = datetime.combine(visit_date + timedelta(days=1), time(), tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC)


def event_schedule(scheduled: EventScheduled) -> Schedule:
    return Schedule(
        starts_at=scheduled.event_date, ends_at=scheduled.event_end_date, terms=scheduled.terms
    )


def visit_schedule(visit_date: date | None, zone: str) -> Schedule:
    """An attraction visit has no start and ends with its day in the organization's zone (the
    gates take its tickets until then); without a visit date, it never ends."""
    if visit_date is None:
        return Schedule()
    return Schedule(ends_at=visit_day_end(visit_date, zone))


class NotYetFulfilled(DomainError):
    code = "not_yet_fulfilled"


def fulfilled(ticket: TicketState, now: datetime) -> bool:
    """Whether the ticket may be handed out (PDF, e-ticket link, wallet pass): from the
    event's `fulfillment_starts_at` on, or at once without one."""
    starts = ticket.issued.terms.fulfillment_starts_at
    return starts is None or now >= starts


def handed_out(ticket: TicketState, now: datetime) -> bool:
    """Whether the holder is given the ticket now (its PDF, e-ticket link, wallet passes):
    fulfilled, and not refunded."""
    return ticket.status != "refunded" and fulfilled(ticket, now)


def require_fulfilled(ticket: TicketState, now: datetime) -> None:
    if not fulfilled(ticket, now):
        starts = ticket.issued.terms.fulfillment_starts_at
        assert starts is not None
        raise NotYetFulfilled(f"the event's tickets are handed out from {starts.isoformat()}")


def scannable_until(starts_at: datetime | None, ends_at: datetime | None) -> datetime | None:
    """Gates close six hours after an event starts (or when it ends, if later). A product
    without a start (an attraction) is good until it ends: its visit day's end
    (`visit_day_end`), or without a visit date, no limit."""
    if starts_at is not None:
        return max(ends_at or starts_at, starts_at + SCANNABLE_AFTER_START)
    return ends_at


def issue_tickets(
    opened: PurchaseOpened, now: datetime, schedule: Schedule, *, named: set[int]
) -> dict[str, list[Event]]:
    """One TicketIssued per ticket of a paid purchase. `named`: ticket ids whose attendee was
    given at purchase; without a personalization policy of the event, the others need a name
    until the event starts. The `ends_at` of a dated attraction visit is its `visit_day_end`."""
    tickets = opened.tickets
    fee_share = fee_shares(opened)
    starts_at = schedule.starts_at
    until = scannable_until(starts_at, schedule.ends_at)
    policy = schedule.terms.personalization
    window_end = (policy.ends_at if policy else None) or starts_at
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
                personalization_end=window_end,
                price_cents=t.amount_cents,
                service_fee_cents=fee,
                currency=opened.pricing.currency,
                scannable_until=until,
                issued_at=now,
                terms=schedule.terms,
                # Open from the sale unless the terms say later: the window starts now.
                personalization_start=(policy.starts_at if policy else None)
                or (now if window_end is not None else None),
                holder_named=t.id in named,
            )
        ]
        for t, fee in zip(tickets, fee_share, strict=True)
    }


def fee_shares(opened: PurchaseOpened) -> list[int]:
    """The purchase's service fee split over its tickets in their order, adding up exactly:
    each ticket's by the fee rule on its price (`pricing.ticket_shares`), or, in a purchase
    opened before those were kept, in parts that differ by at most one."""
    if all(t.fee_cents is not None for t in opened.tickets):
        return [t.fee_cents or 0 for t in opened.tickets]
    parts = len(opened.tickets)
    base, rest = divmod(opened.pricing.fee_cents, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def admission(state: TicketState, now: datetime, code: str | None = None) -> Reason:
    """Whether the gate lets the ticket in now, shown by `code` (a former code of a ticket
    transferred since is `resold`)."""
    if code is not None and code != state.code:
        return "resold"
    if state.refunded_by is not None:
        return "refunded"
    if state.scan_count:
        return "already_scanned"
    if gates_closed(state, now):
        return "expired"
    return "ok"


def gates_closed(state: TicketState, now: datetime) -> bool:
    """Past the ticket's `scannable_until`: no gate takes it, and no link hands it out."""
    until = state.issued.scannable_until
    return until is not None and now >= until


def scan(
    state: TicketState, now: datetime, api_key_id: int | None, code: str | None = None
) -> tuple[Reason, list[Event]]:
    reason = admission(state, now, code)
    if reason != "ok":
        return reason, []
    return reason, [
        TicketScanned(ticket_id=state.issued.ticket_id, scanned_at=now, api_key_id=api_key_id)
    ]
