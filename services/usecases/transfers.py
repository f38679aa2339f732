"""Transfer commands: offer a ticket (by the partner, or by the buyer with the purchase e-mail),
accept or decline it with the recipient's token, and the partner's reads. Every decision is
made on the transfer's and the ticket's own streams and appended at the versions it saw, so a
conflicting offer, accept, scan or refund makes it decide again."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from domain import streams, tickets, transfers
from domain.errors import NotFound
from domain.events import Event
from domain.purchasing import PurchaseState
from domain.refunds import OrderInactive
from domain.tickets import TicketState
from domain.transfers import OfferTransfer, TransferState
from infra import handed_out
from infra.codes import random_code
from infra.eventstore import (
    ConcurrencyError,
    Metadata,
    PendingAppend,
    append,
    read_stream,
    read_streams,
)
from services.usecases.purchases import TICKET_CODE_LENGTH, UNAMBIGUOUS
from services.usecases.ticketing import load_purchase, load_ticket

MAX_ATTEMPTS = 10


@dataclass
class Transfer:
    """A transfer and the ticket it is of, as their streams have them now."""

    state: TransferState
    ticket: TicketState


def new_transfer_id() -> str:
    return secrets.token_hex(12)


def transfer_id_for(reserved: str) -> str:
    """The id of the transfer an idempotency key's request offers, from the key's reserved
    value (shaped as every transfer id: 24 hex digits)."""
    return hashlib.sha256(reserved.encode()).hexdigest()[:24]


def new_accept_token() -> str:
    return secrets.token_urlsafe(24)


async def load_transfer(pool: asyncpg.Pool, transfer_id: str) -> tuple[TransferState | None, int]:
    """The transfer and its stream's version (None and 0 for an unknown id)."""
    recorded = await read_stream(pool, streams.transfer(transfer_id))
    return transfers.replay_transfer(r.event() for r in recorded), len(recorded)


async def partner_ticket(pool: asyncpg.Pool, code: str, organization_id: int) -> int:
    """The id of the organization's ticket with this code (current or former); 404 for any
    other organization's."""
    handle = await handed_out.ticket_handle_by_code(pool, code)
    if handle is None or handle.organization_id != organization_id:
        raise NotFound("ticket not found", "code")
    return handle.ticket_id


async def buyer_ticket(pool: asyncpg.Pool, code: str, email: str, organization_id: int) -> int:
    """The id of the ticket with this code, only for its purchase's e-mail: every miss (an
    unknown code, another organization's, another e-mail) is the same 404 after one constant-time
    comparison, as the buyer API answers."""
    handle = await handed_out.ticket_handle_by_code(pool, code)
    purchase = None
    if handle is not None and handle.organization_id == organization_id:
        purchase = await load_purchase(pool, handle.purchase_token)
    if not bought_by(purchase, email):
        raise NotFound("ticket not found", "code")
    assert handle is not None
    return handle.ticket_id


def bought_by(purchase: PurchaseState | None, email: str) -> bool:
    """Whether `email` is the purchase's, after one constant-time comparison whatever is
    missing: the buyer API's uniform 404 leaks no timing either."""
    known = purchase.opened.buyer.email if purchase is not None else ""
    given = email.strip().lower().encode()
    return hmac.compare_digest((known or "\x00no-such-ticket").lower().encode(), given)


async def offer(
    pool: asyncpg.Pool, ticket_id: int, command: OfferTransfer, meta: Metadata
) -> Transfer:
    """Decided on the ticket's stream and its latest transfer: of two offers at once, the one
    appended first is made and the other finds it pending."""
    for _ in range(MAX_ATTEMPTS):
        ticket, version = await load_ticket(pool, ticket_id)
        if ticket is None:
            await _never_issued(pool, ticket_id)
        latest = None
        if ticket is not None and ticket.transfer_offers:
            latest, _ = await load_transfer(pool, ticket.transfer_offers[-1])
        decided = transfers.offer(ticket, latest, command, datetime.now(UTC))
        versions = {streams.ticket(ticket_id): version}
        if await _appended(pool, decided, versions, meta):
            return await _reloaded(pool, command.transfer_id)
    raise ConcurrencyError(streams.ticket(ticket_id), "transfer offer kept conflicting")


async def _never_issued(pool: asyncpg.Pool, ticket_id: int) -> None:
    """A ticket with no stream is of an order not paid yet, or never to be: one cancelled or
    expired answers `409 order_inactive`, as its refunds and passes do, not "not yet paid"."""
    handle = await handed_out.ticket_by_id(pool, ticket_id)
    purchase = await load_purchase(pool, handle.purchase_token) if handle else None
    if purchase is not None and purchase.status not in ("pending_payment", "paid"):
        raise OrderInactive(f"the ticket's order is {purchase.status}: it was never issued")


Decided = dict[str, list[Event]]
Decide = Callable[[TransferState, TicketState, datetime], Decided]


async def accept(pool: asyncpg.Pool, transfer_id: str, token: str, meta: Metadata) -> Transfer:
    """The ticket passes to the recipient under a new code and attendee token, which the
    event store indexes in the same transaction: the new code scans at once."""

    def decide(transfer: TransferState, ticket: TicketState, now: datetime) -> Decided:
        return transfers.accept(
            transfer,
            ticket,
            token,
            now,
            new_code=random_code(UNAMBIGUOUS, TICKET_CODE_LENGTH),
            new_attendee_token="tok_" + secrets.token_hex(16),
        )

    return await _answer(pool, transfer_id, token, decide, meta)


async def decline(pool: asyncpg.Pool, transfer_id: str, token: str, meta: Metadata) -> Transfer:
    def decide(transfer: TransferState, ticket: TicketState, now: datetime) -> Decided:
        events = transfers.decline(transfer, ticket, token, now)
        return {streams.transfer(transfer.offered.transfer_id): events}

    return await _answer(pool, transfer_id, token, decide, meta)


async def _answer(
    pool: asyncpg.Pool, transfer_id: str, token: str, decide: Decide, meta: Metadata
) -> Transfer:
    """The recipient's answer, decided on both streams and appended at the versions seen."""
    found, _ = await load_transfer(pool, transfer_id)
    if not transfers.token_matches(found, token):
        raise NotFound("transfer not found")
    assert found is not None
    ticket_id = found.offered.ticket_id
    for _ in range(MAX_ATTEMPTS):
        transfer, version, ticket, ticket_version = await _both(pool, transfer_id, ticket_id)
        decided = decide(transfer, ticket, datetime.now(UTC))
        versions = {
            streams.transfer(transfer_id): version,
            streams.ticket(ticket_id): ticket_version,
        }
        if await _appended(pool, decided, versions, meta):
            return await _reloaded(pool, transfer_id)
    raise ConcurrencyError(streams.transfer(transfer_id), "transfer answer kept conflicting")


async def _both(
    pool: asyncpg.Pool, transfer_id: str, ticket_id: int
) -> tuple[TransferState, int, TicketState, int]:
    """The transfer and its ticket read in one statement, so as of one moment: an answer that
    lost a race sees the winner's events on both streams, never on one alone."""
    found = await read_streams(pool, [streams.transfer(transfer_id), streams.ticket(ticket_id)])
    on_transfer = found[streams.transfer(transfer_id)]
    on_ticket = found[streams.ticket(ticket_id)]
    transfer = transfers.replay_transfer(r.event() for r in on_transfer)
    ticket = tickets.replay_ticket(r.event() for r in on_ticket)
    assert transfer is not None and ticket is not None
    return transfer, len(on_transfer), ticket, len(on_ticket)


async def _appended(
    pool: asyncpg.Pool, decided: Decided, versions: dict[str, int], meta: Metadata
) -> bool:
    """False if another writer moved one of the streams first (decide again)."""
    appends = [
        PendingAppend(stream, versions.get(stream, streams.NEW), events)
        for stream, events in decided.items()
    ]
    try:
        await append(pool, appends, meta)
    except ConcurrencyError:
        return False
    return True


async def _reloaded(pool: asyncpg.Pool, transfer_id: str) -> Transfer:
    state, _ = await load_transfer(pool, transfer_id)
    assert state is not None
    ticket, _ = await load_ticket(pool, state.offered.ticket_id)
    assert ticket is not None
    return Transfer(state, ticket)


async def partner_transfer(pool: asyncpg.Pool, transfer_id: str, organization_id: int) -> Transfer:
    """One transfer of the organization's; 404 for an unknown id or another organization's."""
    state, _ = await load_transfer(pool, transfer_id)
    if state is None or state.offered.organization_id != organization_id:
        raise NotFound("transfer not found", "transfer_id")
    ticket, _ = await load_ticket(pool, state.offered.ticket_id)
    assert ticket is not None
    return Transfer(state, ticket)


async def ticket_transfers(pool: asyncpg.Pool, ticket_id: int) -> list[Transfer]:
    """Every transfer offered for the ticket, the oldest first."""
    ticket, _ = await load_ticket(pool, ticket_id)
    if ticket is None:
        return []
    found = await read_streams(pool, [streams.transfer(t) for t in ticket.transfer_offers])
    states = [
        transfers.replay_transfer(r.event() for r in found.get(streams.transfer(t), []))
        for t in ticket.transfer_offers
    ]
    return [Transfer(s, ticket) for s in states if s is not None]
