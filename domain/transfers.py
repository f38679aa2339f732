"""Passing a ticket on: the holder (through the partner, or as the buyer) offers it to a
recipient, who accepts or declines it with the token e-mailed to them before a deadline.

A transfer is an aggregate of its own (`transfer-<id>`). Offering it is also recorded on the
ticket (`TicketTransferOffered`), so of two offers at once one wins; accepting it changes the
ticket in the same append (`TicketTransferred`: a new code, a new attendee token, the recipient
as consumer), so of two accepts, or of an accept and a scan or refund, exactly one wins. An
offer nobody answered expires at its deadline without an event: it reads as expired from then
on, and the ticket may be offered again."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from domain import streams
from domain.errors import DomainError, InvalidCommand, NotFound
from domain.events import Event
from domain.fields import printable
from domain.purchasing import EMAIL, EMAIL_MAX, NAME_MAX
from domain.tickets import (
    Consumer,
    TicketState,
    TicketTransferOffered,
    TicketTransferred,
    TicketWasRefunded,
    TicketWasScanned,
)

# How long a recipient has to answer unless the offer says otherwise (never past the close).
DEFAULT_DEADLINE = timedelta(hours=72)
TransferStatus = Literal["offered", "accepted", "declined", "expired", "withdrawn"]
OfferedBy = Literal["partner", "buyer"]


class Recipient(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    email: str


class TransferOffered(Event, frozen=True):
    """`token` is the recipient's capability to answer: kept as given, since the e-mail that
    carries it is composed from this event after it is stored."""

    transfer_id: str
    ticket_id: int
    purchase_token: str
    organization_id: int
    recipient: Recipient
    deadline: datetime
    token: str
    by: OfferedBy
    offered_at: datetime


class TransferAccepted(Event, frozen=True):
    transfer_id: str
    ticket_id: int
    accepted_at: datetime


class TransferDeclined(Event, frozen=True):
    transfer_id: str
    ticket_id: int
    declined_at: datetime


class TicketNotIssued(DomainError):
    code = "not_yet_paid"


class TicketAlreadyTransferred(DomainError):
    code = "ticket_already_transferred"


class TransferPending(DomainError):
    code = "transfer_pending"


class TransfersNotAllowed(DomainError):
    code = "transfers_not_allowed"


class TransfersClosed(DomainError):
    code = "transfers_closed"


class TransferExpired(DomainError):
    code = "transfer_expired"


class TransferNotOpen(DomainError):
    code = "transfer_not_open"


@dataclass
class TransferState:
    offered: TransferOffered
    accepted_at: datetime | None = None
    declined_at: datetime | None = None

    def status(self, now: datetime) -> TransferStatus:
        if self.accepted_at is not None:
            return "accepted"
        if self.declined_at is not None:
            return "declined"
        return "expired" if now >= self.offered.deadline else "offered"


def shown_status(
    transfer: TransferState, ticket: TicketState | None, now: datetime
) -> TransferStatus:
    """An open offer its ticket can no longer follow (refunded or scanned since) is withdrawn,
    as its answer would be refused: it was shown `offered` until its deadline."""
    status = transfer.status(now)
    if status == "offered" and ticket is not None and (ticket.refunded_by or ticket.scan_count):
        return "withdrawn"
    return status


def evolve_transfer(state: TransferState | None, event: Event) -> TransferState | None:
    match event:
        case TransferOffered():
            return TransferState(offered=event)
        case TransferAccepted() if state:
            state.accepted_at = event.accepted_at
        case TransferDeclined() if state:
            state.declined_at = event.declined_at
    return state


def replay_transfer(events: Iterable[Event]) -> TransferState | None:
    state = None
    for event in events:
        state = evolve_transfer(state, event)
    return state


class OfferTransfer(msgspec.Struct, frozen=True, kw_only=True):
    """`transfer_id` and `token` are drawn by the caller (random, unguessable); `deadline`
    unset is `DEFAULT_DEADLINE` from now."""

    transfer_id: str
    token: str
    recipient: Recipient
    by: OfferedBy
    deadline: datetime | None = None


def closes_at(ticket: TicketState) -> datetime | None:
    """When transfers of the ticket close: the event's set time, or its start (an attraction
    visit: the end of its day), whichever comes first; None: never."""
    issued = ticket.issued
    times = (issued.terms.transfers.closes_at, issued.starts_at or issued.scannable_until)
    return min((t for t in times if t is not None), default=None)


def offer(
    ticket: TicketState | None,
    latest: TransferState | None,
    command: OfferTransfer,
    now: datetime,
) -> dict[str, list[Event]]:
    """The offer, on the transfer's new stream and on the ticket's. `latest`: the ticket's
    latest transfer (`ticket.transfer_offers[-1]`), None if it never had one."""
    recipient = _recipient(command.recipient)
    if command.deadline is not None and command.deadline.tzinfo is None:
        raise InvalidCommand("needs a time zone", "deadline")
    if command.deadline is not None and command.deadline <= now:
        raise InvalidCommand("must lie in the future", "deadline")
    if ticket is None:
        raise TicketNotIssued("the ticket's purchase is not paid")
    _transferable(ticket, now)
    if latest is not None and latest.status(now) == "offered":
        raise TransferPending(
            f"the ticket is already offered, until {latest.offered.deadline.isoformat()}"
        )
    deadline = command.deadline or now + DEFAULT_DEADLINE
    closes = closes_at(ticket)
    if closes is not None:
        deadline = min(deadline, closes)
    issued = ticket.issued
    return {
        streams.transfer(command.transfer_id): [
            TransferOffered(
                transfer_id=command.transfer_id,
                ticket_id=issued.ticket_id,
                purchase_token=issued.purchase_token,
                organization_id=issued.organization_id,
                recipient=recipient,
                deadline=deadline,
                token=command.token,
                by=command.by,
                offered_at=now,
            )
        ],
        streams.ticket(issued.ticket_id): [
            TicketTransferOffered(ticket_id=issued.ticket_id, transfer_id=command.transfer_id)
        ],
    }


def accept(
    transfer: TransferState,
    ticket: TicketState,
    token: str,
    now: datetime,
    *,
    new_code: str,
    new_attendee_token: str,
) -> dict[str, list[Event]]:
    """The ticket passes to the recipient under `new_code` and `new_attendee_token`, if the
    token is the transfer's, it is still open and the ticket still transferable."""
    _answerable(transfer, ticket, token, now)
    _transferable(ticket, now)
    offered = transfer.offered
    return {
        streams.transfer(offered.transfer_id): [
            TransferAccepted(
                transfer_id=offered.transfer_id, ticket_id=offered.ticket_id, accepted_at=now
            )
        ],
        streams.ticket(offered.ticket_id): [
            TicketTransferred(
                ticket_id=offered.ticket_id,
                transfer_id=offered.transfer_id,
                new_code=new_code,
                new_attendee_token=new_attendee_token,
                consumer=Consumer.named(offered.recipient.name, offered.recipient.email),
            )
        ],
    }


def decline(transfer: TransferState, ticket: TicketState, token: str, now: datetime) -> list[Event]:
    """The recipient says no: the ticket stays as it was, and may be offered again."""
    _answerable(transfer, ticket, token, now)
    offered = transfer.offered
    return [
        TransferDeclined(
            transfer_id=offered.transfer_id, ticket_id=offered.ticket_id, declined_at=now
        )
    ]


def token_matches(transfer: TransferState | None, token: str) -> bool:
    """In constant time, and as long for an unknown transfer, so a miss tells nothing."""
    known = transfer.offered.token if transfer is not None else "\x00no-such-transfer"
    return hmac.compare_digest(known.encode(), token.encode()) and transfer is not None


def _answerable(transfer: TransferState, ticket: TicketState, token: str, now: datetime) -> None:
    if not token_matches(transfer, token):
        raise NotFound("transfer not found")
    status = transfer.status(now)
    if status == "expired":
        raise TransferExpired(f"the offer ran out at {transfer.offered.deadline}")
    if status != "offered" or ticket.transfer_offers[-1:] != (transfer.offered.transfer_id,):
        raise TransferNotOpen(f"the transfer is {status}")


def _transferable(ticket: TicketState, now: datetime) -> None:
    if ticket.refunded_by is not None:
        raise TicketWasRefunded("the ticket is refunded")
    if ticket.scan_count:
        raise TicketWasScanned("the ticket has been scanned")
    if ticket.transfers:
        raise TicketAlreadyTransferred("the ticket has been transferred once already")
    if not ticket.issued.terms.transfers.allowed:
        raise TransfersNotAllowed("the event does not allow transfers")
    closes = closes_at(ticket)
    if closes is not None and now >= closes:
        raise TransfersClosed(f"transfers closed at {closes}")


def _recipient(recipient: Recipient) -> Recipient:
    name, email = recipient.name.strip(), recipient.email.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidCommand(f"1 to {NAME_MAX} characters", "recipient.name")
    printable(name, "recipient.name")
    if len(email) > EMAIL_MAX or not EMAIL.match(email):
        raise InvalidCommand("not a valid e-mail address", "recipient.email")
    return Recipient(name=name, email=email)
