"""Ticket commands: verify and scan at the gate (`Gate`), the buyer's attendee edits, and a
purchase with its tickets as buyers' pages poll it (`Polls`); what many requests read at one
moment is read in one round trip (`infra.coalesce.Coalesced`). The index of what was handed out
(infra/handed_out.py, written in the append's own transaction) only says which stream to look
at, so a code works as soon as its purchase is acknowledged; every verdict is decided on the
ticket's (or, before payment, the purchase's) own stream, and a scan is appended at the version
it saw."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from domain import personalization, purchasing, streams, tickets
from domain.errors import NotFound
from domain.purchasing import PurchasedTicket, PurchaseState
from domain.tickets import Reason, TicketState
from infra import handed_out
from infra.append_batcher import AppendBatcher
from infra.coalesce import Coalesced
from infra.eventstore import (
    ConcurrencyError,
    Metadata,
    PendingAppend,
    RecordedEvent,
    append,
    read_stream,
    read_streams,
    stream_events,
)
from services.usecases.recent import Recent

MAX_SCAN_ATTEMPTS = 10
# After a conflict a random pause of up to this, doubled per attempt and at most CONFLICT_PAUSE_MAX.
CONFLICT_PAUSE = 0.002
CONFLICT_PAUSE_MAX = 0.1
# The longest a poll waits for a payment report this process is storing for its purchase.
SETTLING_WAIT = 0.25
_PURCHASE_REASON: dict[str, Reason] = {
    "pending_payment": "pending_payment",
    "cancelled": "cancelled",
    "expired": "cancelled",
}


@dataclass
class Verdict:
    """The gate's answer. A ticket not issued yet is described by the purchase it belongs to;
    an issued one by its own stream alone, so a scan reads one small stream, not the order."""

    reason: Reason
    ticket_id: int
    code: str
    ticket: TicketState | None
    version: int
    purchase: PurchaseState | None = None

    @property
    def valid(self) -> bool:
        return self.reason == "ok"


async def load_ticket(pool: asyncpg.Pool, ticket_id: int) -> tuple[TicketState | None, int]:
    return (await load_tickets(pool, [ticket_id]))[ticket_id]


async def load_tickets(
    pool: asyncpg.Pool, ticket_ids: Sequence[int]
) -> dict[int, tuple[TicketState | None, int]]:
    """Each ticket's state and stream version (None and 0 before issue), in one round trip."""
    found = await read_streams(pool, [streams.ticket(t) for t in ticket_ids])
    loaded = {}
    for ticket_id in ticket_ids:
        recorded = found.get(streams.ticket(ticket_id), [])
        loaded[ticket_id] = (tickets.replay_ticket(r.event() for r in recorded), len(recorded))
    return loaded


def _issued(
    ticket_ids: Sequence[int], found: Sequence[list[RecordedEvent]]
) -> dict[int, TicketState]:
    issued = {}
    for ticket_id, recorded in zip(ticket_ids, found, strict=True):
        state = tickets.replay_ticket(r.event() for r in recorded)
        if state is not None:
            issued[ticket_id] = state
    return issued


class Polls:
    """A purchase with its issued tickets, as buyers' pages poll it until it is paid. Its
    tickets never change once it is opened, so from the second poll on (on this gateway) the
    purchase's stream and its tickets' come in one read, shared with the other polls and
    webhooks of the moment (`reads`): the poll that shows `paid_at` waits for one round trip,
    not two. The ticket ids of the last `remember` purchases polled are kept.

    A buyer's page polls as soon as Stripe confirmed the payment to it, while Stripe's report
    of it reaches the gateway: a poll of a purchase whose payment report this process is
    storing waits for it (at most SETTLING_WAIT) and shows what it stored, instead of the
    state it is about to replace and another poll later."""

    def __init__(
        self,
        reads: Coalesced[str, list[RecordedEvent]],
        find: Callable[[str, int], Awaitable[tuple[PurchaseState, int]]],
        remember: int = 50_000,
    ) -> None:
        """`find`: the organization's purchase by token, NotFound for any other."""
        self._reads = reads
        self._find = find
        self._ticket_ids: Recent[str, list[int]] = Recent(remember)
        self._settling: dict[str, asyncio.Event] = {}

    @contextlib.contextmanager
    def settling(self, token: str) -> Iterator[None]:
        """A payment report of purchase `token` being stored here (usecases/settlement.py)."""
        if token in self._settling:  # a second delivery of it: the first one's wait serves
            yield
            return
        done = self._settling[token] = asyncio.Event()
        try:
            yield
        finally:
            del self._settling[token]
            done.set()

    async def _settled(self, token: str, deadline: float) -> bool:
        """Waits, until `deadline` at the latest, for the report of `token` being stored here,
        if one is; whether one was and ended in time."""
        done = self._settling.get(token)
        if done is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await done.wait()
        return done.is_set()

    async def purchase(
        self, token: str, organization_id: int
    ) -> tuple[PurchaseState, dict[int, TicketState]]:
        deadline = asyncio.get_running_loop().time() + SETTLING_WAIT  # for the poll's waits
        await self._settled(token, deadline)
        state, issued = await self._read(token, organization_id)
        if state.status == "pending_payment" and await self._settled(token, deadline):
            state, issued = await self._read(token, organization_id)  # it began meanwhile
        return state, issued

    async def _read(
        self, token: str, organization_id: int
    ) -> tuple[PurchaseState, dict[int, TicketState]]:
        ids = self._ticket_ids.get(token)
        if ids is None:
            state, _ = await self._find(token, organization_id)
            ids = self._ticket_ids.keep(token, [t.id for t in state.opened.tickets])
            if state.status != "paid":
                return state, {}
            found = await self._reads.get_many([streams.ticket(t) for t in ids])
            return state, _issued(ids, found)
        found = await self._reads.get_many([streams.purchase(token), *map(streams.ticket, ids)])
        state = purchasing.replay_purchase(r.event() for r in found[0])
        if state is None or state.opened.organization_id != organization_id:
            raise NotFound("purchase not found", "token")
        if state.status != "paid":
            return state, {}
        return state, _issued(ids, found[1:])


async def load_purchase(pool: asyncpg.Pool, token: str) -> PurchaseState | None:
    recorded = await read_stream(pool, streams.purchase(token))
    return purchasing.replay_purchase(r.event() for r in recorded)


def purchase_from(recorded: list[RecordedEvent]) -> tuple[PurchaseState | None, int]:
    return purchasing.replay_purchase(r.event() for r in recorded), len(recorded)


class Gate:
    """Verify and scan for every gate this gateway serves, together: the codes asked for at
    one moment are read in one round trip (the index and each ticket's stream), and the scans
    they admit are stored by one group commit (`recorder`), each at the version it was decided
    on, so of N gates scanning one ticket, on this gateway or another, one gets `ok`. After a
    sale's last payment the gates ask by the thousand a second; a round trip each would queue
    them behind one another and behind the database's CPU."""

    def __init__(self, pool: asyncpg.Pool, recorder: AppendBatcher) -> None:
        self._pool = pool
        self._recorder = recorder
        self._rows: Coalesced[str, list[asyncpg.Record]] = Coalesced(
            lambda codes: handed_out.tickets_by_codes(pool, codes), []
        )

    async def verify(self, code: str, organization_id: int) -> Verdict:
        """The gate's answer for a ticket code of this organization (404 for any other)."""
        rows = await self._rows.get(code)
        if not rows or rows[0]["organization_id"] != organization_id:
            raise NotFound("ticket not found", "code")
        row = rows[0]
        recorded = stream_events(rows)
        ticket = tickets.replay_ticket(r.event() for r in recorded)
        if ticket is not None:
            reason = tickets.admission(ticket, datetime.now(UTC), row["code"])
            return Verdict(reason, row["ticket_id"], row["code"], ticket, len(recorded))
        purchase = await load_purchase(self._pool, row["purchase_token"])
        assert purchase is not None
        reason = (
            "refunded"
            if purchase.refunded
            else _PURCHASE_REASON.get(purchase.status, "pending_payment")
        )
        return Verdict(reason, row["ticket_id"], row["code"], None, 0, purchase)

    async def scan(self, code: str, organization_id: int, meta: Metadata) -> Verdict:
        """Verify and redeem atomically: a scan that finds the ticket scanned meanwhile decides
        again on the stream as it is now."""
        async for _ in attempts():
            verdict = await self.verify(code, organization_id)
            if not verdict.valid or verdict.ticket is None:
                return verdict
            _, scanned = tickets.scan(verdict.ticket, datetime.now(UTC), meta.api_key_id)
            stream = streams.ticket(verdict.ticket_id)
            try:
                await self._recorder.append([PendingAppend(stream, verdict.version, scanned)], meta)
            except ConcurrencyError:
                continue
            for event in scanned:
                tickets.evolve_ticket(verdict.ticket, event)
            return verdict
        raise ConcurrencyError(streams.ticket(verdict.ticket_id), "scan kept conflicting")


async def attempts() -> AsyncIterator[int]:
    """The attempts at a change of one ticket, each after a random pause that doubles: twenty
    editors of one ticket that all tried again at once met again, and a third of them were
    refused after ten attempts."""
    for attempt in range(MAX_SCAN_ATTEMPTS):
        if attempt:
            ceiling = min(CONFLICT_PAUSE * 2**attempt, CONFLICT_PAUSE_MAX)
            await asyncio.sleep(random.uniform(0, ceiling))
        yield attempt


# Compared against when no order has the access code, so a miss costs what a hit does.
_NO_ORDER = handed_out.OrderHandle("", "\x00no-such-order")


@dataclass
class Order:
    purchase: PurchaseState
    tickets: list[TicketState]


async def order_by_access_code(
    pool: asyncpg.Pool, access_code: str, email: str, organization_id: int
) -> Order:
    """The buyer's order, only for the right access code and purchase e-mail, whatever its
    status: its tickets exist from the purchase on (the partner API shows their codes, the gate
    answers `pending_payment` or `cancelled` for them), so no order is one "with no tickets".
    Every miss is the same NotFound after the same work (one query of the index written with
    the purchase, one constant-time comparison per order with that code, at least one), so the
    answer reveals nothing about which part was wrong, and nothing waits for a projector."""
    found = await handed_out.orders_by_access_code(pool, access_code, organization_id)
    given = email.strip().lower().encode()
    token = None
    for candidate in found or [_NO_ORDER]:
        if hmac.compare_digest(candidate.buyer_email.lower().encode(), given):
            token = candidate.purchase_token
    if token is None:
        raise NotFound("tickets not found", "code")
    purchase = await load_purchase(pool, token)
    assert purchase is not None
    loaded = await load_tickets(pool, [t.id for t in purchase.opened.tickets])
    issued = [state for state, _ in loaded.values()]
    return Order(purchase, [s for s in issued if s is not None])


async def update_attendees(
    pool: asyncpg.Pool,
    order: Order,
    seats: list[tuple[str, str | None, str | None, Mapping[str, object]]],
    meta: Metadata,
) -> None:
    """Apply (token, name, email, other consumer details) edits to the order's tickets in one
    append; tokens of other orders are ignored. A seat that cannot change any more (refunded or
    scanned) is left as it is while the others are edited, as a buyer's page sends every seat
    of the order back; only when every seat named is such is the edit refused. A conflicting
    scan or edit makes the whole edit retry."""
    async for _ in attempts():
        by_token = {}
        for t in order.purchase.opened.tickets:
            by_token[t.attendee_token] = t.id
        loaded = await load_tickets(pool, list(by_token.values()))
        appends = []
        now = datetime.now(UTC)
        closed: list[personalization.PersonalizationClosed] = []
        editable = 0
        # The same seat edited twice in one request: the last edit wins, even one that puts
        # back what the seat has (an earlier edit of it is not made at all).
        last = {token: i for i, (token, *_) in enumerate(seats)}
        for i, (token, name, email, details) in enumerate(seats):
            ticket_id = by_token.get(token)
            if ticket_id is None or last[token] != i:
                continue
            state, version = loaded[ticket_id]
            if state is None or state.attendee_token != token:
                continue  # a token the ticket no longer has since it was transferred
            try:
                events = personalization.update_attendee(
                    state, name, email, now, f"seats[{i}]", details
                )
            except personalization.PersonalizationClosed as exc:
                if state.refunded_by is None and not state.scan_count:
                    raise  # the window has closed: for every seat alike
                closed.append(exc)
                continue
            editable += 1
            if events:
                appends.append(PendingAppend(streams.ticket(ticket_id), version, events))
        if closed and not editable:
            raise closed[0]
        if not appends:
            return
        try:
            await append(pool, appends, meta)
            return
        except ConcurrencyError:
            continue
    raise ConcurrencyError("ticket", "attendee update kept conflicting")


async def ticket_by_attendee_token(
    pool: asyncpg.Pool, token: str, organization_id: int
) -> tuple[PurchasedTicket, TicketState | None, PurchaseState]:
    """The seat a per-seat token names, as bought, as issued (None while its order is not
    paid, or once it was cancelled) and its order. A token a transfer replaced names nothing."""
    handle = await handed_out.ticket_by_attendee_token(pool, token)
    if handle is None or handle.organization_id != organization_id:
        raise NotFound("ticket not found", "token")
    ticket, _ = await load_ticket(pool, handle.ticket_id)
    purchase = await load_purchase(pool, handle.purchase_token)
    if purchase is None:
        raise NotFound("ticket not found", "token")
    bought = next(t for t in purchase.opened.tickets if t.id == handle.ticket_id)
    current = ticket.attendee_token if ticket is not None else bought.attendee_token
    if current != token:
        raise NotFound("ticket not found", "token")
    return bought, ticket, purchase
