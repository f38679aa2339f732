"""One ticket, as the partner API's ticket resource shows it and a partner personalizes it. Read
from the streams alone (the index of handed-out codes only says which), so a ticket is found
the moment its purchase is acknowledged. `ticket_facts` is what every payload that shows a
ticket (the purchase, the buyer's lookup, the resource) says of it, so they never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from domain import personalization, streams, tickets
from domain.errors import DomainError, NotFound
from domain.purchasing import PurchasedTicket, PurchaseState
from domain.tickets import Consumer, TicketState
from infra import handed_out
from infra.eventstore import ConcurrencyError, Metadata, PendingAppend, append, stream_events
from services.usecases.ticketing import attempts, load_purchase, load_ticket

# A ticket not issued yet (its purchase unpaid or ended) is described by its purchase.
_UNISSUED_STATUS = {
    "pending_payment": "pending_payment",
    "paid": "valid",
    "cancelled": "cancelled",
    "expired": "cancelled",
}
MAX_UID = 18


class NotYetPaid(DomainError):
    code = "not_yet_paid"


@dataclass(frozen=True)
class TicketFacts:
    """What a ticket is now: from its own stream once issued, from its purchase before."""

    code: str
    status: str
    consumer: Consumer
    scan_count: int
    needs_personalization: bool
    personalization_start: datetime | None
    personalization_end: datetime | None
    scannable_until: datetime | None
    # Whether its holder is someone's own details, not the buyer's filled in for a seat
    # nobody was named for (see TicketState.named; the order's first seat is the buyer's).
    named: bool = True

    @property
    def name(self) -> str | None:
        return self.consumer.name

    @property
    def email(self) -> str | None:
        return self.consumer.email

    @property
    def attendee(self) -> dict[str, str | None]:
        """The seat's attendee as the buyer's pages show it: null until someone is named for
        it, not the buyer's details filled in (the seat's attendee link would hand them on)."""
        if not self.named:
            return {"name": None, "email": None}
        return {"name": self.name, "email": self.email}


def ticket_facts(
    purchase: PurchaseState, bought: PurchasedTicket, issued: TicketState | None
) -> TicketFacts:
    if issued is not None:
        return TicketFacts(
            code=issued.code,
            status=issued.status,
            consumer=issued.consumer,
            scan_count=issued.scan_count,
            needs_personalization=issued.needs_personalization_at(datetime.now(UTC)),
            personalization_start=issued.issued.personalization_start,
            personalization_end=issued.issued.personalization_end,
            scannable_until=issued.issued.scannable_until,
            named=issued.named or _buyers_own(purchase, bought),
        )
    status = "refunded" if purchase.refunded else _UNISSUED_STATUS[purchase.status]
    return TicketFacts(
        code=bought.code,
        status=status,
        consumer=Consumer.named(bought.name, bought.email),
        scan_count=0,
        needs_personalization=False,
        personalization_start=None,
        personalization_end=None,
        scannable_until=None,
        named=bought.named or _buyers_own(purchase, bought),
    )


def _buyers_own(purchase: PurchaseState, bought: PurchasedTicket) -> bool:
    """The order's first seat is the buyer's own until someone else is named for it, as the
    buyer API's example shows it; the others are nobody's until named."""
    return bought.id == purchase.opened.tickets[0].id


def as_bought(facts: TicketFacts, bought: PurchasedTicket) -> TicketFacts:
    """The ticket as its purchase shows it, in the partner's purchase payload and to its buyer
    alike: once passed on, the code it was bought under (which answers `resold`), `transferred`
    (or `refunded` once refunded: the money came back to this purchase), and neither the new
    holder's code nor their details."""
    if facts.code == bought.code:
        return facts
    return replace(
        facts,
        code=bought.code,
        status="refunded" if facts.status == "refunded" else "transferred",
        consumer=Consumer(),
        needs_personalization=False,
    )


@dataclass
class Ticket:
    purchase: PurchaseState
    bought: PurchasedTicket
    issued: TicketState | None
    # The ticket stream's version the state was read at (0 before issue).
    version: int

    @property
    def uid(self) -> str:
        return str(self.bought.id)

    @property
    def facts(self) -> TicketFacts:
        return ticket_facts(self.purchase, self.bought, self.issued)


def _missing() -> NotFound:
    return NotFound("ticket not found", "uid")


async def _assembled(
    pool: asyncpg.Pool,
    ticket_id: int,
    purchase_token: str,
    issued: TicketState | None,
    version: int,
) -> Ticket:
    purchase = await load_purchase(pool, purchase_token)
    if purchase is None:
        raise _missing()
    if issued is None and purchase.status == "paid":
        # Paid between the two reads: the ticket was issued in the payment's own append, so
        # reading it again now finds it (never a paid purchase shown with an unissued ticket).
        issued, version = await load_ticket(pool, ticket_id)
    bought = next(t for t in purchase.opened.tickets if t.id == ticket_id)
    return Ticket(purchase, bought, issued, version)


async def by_uid(pool: asyncpg.Pool, uid: str, organization_id: int) -> Ticket:
    """The organization's ticket with this uid (its id in decimal); any other is not found."""
    # One spelling per ticket: ASCII digits without a leading zero (`072` is no uid).
    if not (uid.isascii() and uid.isdigit() and uid[0] != "0") or len(uid) > MAX_UID:
        raise _missing()
    ticket_id = int(uid)
    issued, version = await load_ticket(pool, ticket_id)
    if issued is not None:
        if issued.issued.organization_id != organization_id:
            raise _missing()
        return await _assembled(pool, ticket_id, issued.issued.purchase_token, issued, version)
    handle = await handed_out.ticket_by_id(pool, ticket_id)
    if handle is None or handle.organization_id != organization_id:
        raise _missing()
    return await _assembled(pool, ticket_id, handle.purchase_token, None, 0)


async def by_code(pool: asyncpg.Pool, code: str, product: str, organization_id: int) -> Ticket:
    """The organization's ticket of the event or attraction `product` (its slug or id) whose
    current code is `code`. A code of another product, a former code of a transferred ticket
    and an unknown one are not found alike: the reference's search answers a list of exactly
    one ticket."""
    rows = await handed_out.ticket_by_code(pool, code)
    if not rows or rows[0]["organization_id"] != organization_id:
        raise NotFound("ticket not found", "code")
    row = rows[0]
    recorded = stream_events(rows)
    issued = tickets.replay_ticket(r.event() for r in recorded)
    if issued is not None and issued.code != row["code"]:
        raise NotFound("ticket not found", "code")
    ticket = await _assembled(pool, row["ticket_id"], row["purchase_token"], issued, len(recorded))
    opened = ticket.purchase.opened
    if product not in (opened.product_slug, str(opened.event_id or opened.attraction_id)):
        raise NotFound("ticket not found", "code")
    return ticket


async def personalize(
    pool: asyncpg.Pool,
    uid: str,
    organization_id: int,
    changes: Mapping[str, object],
    meta: Metadata,
) -> Ticket:
    """The partner's change of the ticket's consumer (see `personalization.edited`), appended at the
    version it was decided on: a scan, refund or edit in between makes it decide again."""
    async for _ in attempts():
        ticket = await by_uid(pool, uid, organization_id)
        state = ticket.issued
        if state is None:
            if ticket.purchase.status == "pending_payment":
                raise NotYetPaid("the ticket can be personalized once its order is paid")
            raise personalization.PersonalizationClosed(f"the order is {ticket.facts.status}")
        consumer = personalization.edited(state.consumer, changes)
        events = personalization.personalize(state, consumer, "partner", datetime.now(UTC))
        if not events:
            return ticket
        stream = streams.ticket(state.issued.ticket_id)
        try:
            await append(pool, [PendingAppend(stream, ticket.version, events)], meta)
        except ConcurrencyError:
            continue
        for event in events:
            tickets.evolve_ticket(state, event)
        ticket.version += len(events)
        return ticket
    raise ConcurrencyError(streams.ticket(int(uid)), "personalization kept conflicting")
