"""Refund use cases: a partner's refund of a paid purchase's tickets, the refunds and disputes
Stripe reports by webhook, and buyers' refund requests. The decisions are the domain's
(domain/refunds.py); every refund is stored in one append at the inventory's sales desk
(domain/sale_commands.py `RefundTickets`), expecting the purchase and its tickets at the versions it
was decided on, so a scan or a payment landing meanwhile makes it decide again on what they
left. The money moves afterwards: the payments worker makes the stored RefundDecided at
Stripe (services/workers/payment_effects.py)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg
import msgspec

from domain import refunds, sale_commands, sales, streams
from domain.errors import NotFound
from domain.events import Event
from domain.purchasing import PurchaseState, RefundDecided
from domain.refunds import Refund, RefundRequestState
from domain.tickets import TicketState
from infra import handed_out
from infra.eventstore import ConcurrencyError, Metadata, PendingAppend, append, read_stream
from infra.payments import WebhookEvent
from projections import disputes as disputes_read_model
from projections import refund_requests as requests_read_model
from services.usecases.purchases import Purchases
from services.usecases.sales_desks import inventory_desk
from services.usecases.settlement import Settlement
from services.usecases.ticketing import load_purchase, load_ticket, load_tickets

MAX_ATTEMPTS = 5
# How long a request written here is waited for by the list, and how long a list waits for
# the refund requests read model to show it (it is some milliseconds behind; longer only when
# the projector is down, and then the list answers what it has).
WRITTEN_SECONDS = 5.0
WAIT_SECONDS = 1.0
WAIT_STEP_SECONDS = 0.01
# Compared against when no purchase has the code, so a miss costs what a hit does.
_NO_EMAIL = b"\x00no-such-purchase"


def _new_id() -> str:
    return uuid.uuid4().hex


def refund_id_for(reserved: str) -> str:
    """The id of the refund an idempotency key's request makes, from the key's reserved value
    (shaped as every refund id: 32 hex digits)."""
    return hashlib.sha256(reserved.encode()).hexdigest()[:32]


class Refunds:
    """One per gateway: the purchases' desks, catalog and Stripe client hold the state, and
    this only which refund requests it wrote lately, for its list to show them so."""

    def __init__(self, purchases: Purchases) -> None:
        self._purchases = purchases
        self._pool: asyncpg.Pool = purchases.pool
        # Requests this process created or decided lately, with the status it answered and
        # when: the list waits for its read model to show them so (`_listed_as_written`).
        self._written: dict[str, tuple[int, str, float]] = {}

    # ---- the partner's refund -------------------------------------------------------------

    async def refund(
        self,
        token: str,
        organization_id: int,
        ticket_ids: list[int] | None,
        reason: str | None,
        force: bool,
        meta: Metadata,
        refund_id: str | None = None,
    ) -> RefundDecided:
        """Refund the named tickets of the purchase (all that are left for None). Under an
        idempotency key the refund's id is the key's (`refund_id`): a retry of a request whose
        gateway died after storing the refund finds it rather than being told the tickets are
        refunded already."""
        for _ in range(MAX_ATTEMPTS):
            state, version = await self._purchases.find(token, organization_id)
            if refund_id in state.ticket_refunds:
                return state.ticket_refunds[refund_id]
            org = await self._purchases.catalog.organization(organization_id)
            decide = functools.partial(
                refunds.decide_refund,
                state,
                ticket_ids=ticket_ids,
                refund_id=refund_id or _new_id(),
                reason=reason,
                by="partner",
                force=force,
                refund_fee=org.refund_service_fee,
            )
            try:
                refund = await self._store(state, version, meta, decide)
            except ConcurrencyError:
                continue
            assert refund is not None
            return _decided(refund, token)
        raise ConcurrencyError(streams.purchase(token), "refund kept conflicting")

    async def _store(
        self,
        state: PurchaseState,
        version: int,
        meta: Metadata,
        decide: Callable[[Mapping[int, TicketState | None]], Refund | None],
        also_expected: dict[str, int] | None = None,
    ) -> Refund | None:
        """Decide on the purchase's tickets as their streams have them, and store the refund
        with its seats given back at the inventory's desk; None when nothing was decided."""
        opened = state.opened
        loaded = await load_tickets(self._pool, [t.id for t in opened.tickets])
        refund = decide({ticket_id: ticket for ticket_id, (ticket, _) in loaded.items()})
        if refund is None:
            return None
        expected = {streams.purchase(opened.token): version} | {
            streams.ticket(t.id): loaded[t.id][1] for t in refund.returned
        }
        command = sale_commands.RefundTickets(
            opened=opened, refund=refund, expected=expected | (also_expected or {})
        )
        desk = inventory_desk(self._purchases.desks, opened)
        await desk.submit(command, meta, sales.discount_streams(command))
        return refund

    # ---- what Stripe reports --------------------------------------------------------------

    async def settle(self, event: WebhookEvent, meta: Metadata) -> str:
        """A refund or dispute Stripe reports, applied once as every Stripe event is
        (Settlement.settle: its id is the causation id of what it changed). A dispute carries
        no purchase token: it is found by the disputed PaymentIntent."""
        payments = self._purchases.intents.payments
        if event.purchase_token is None and event.intent_id and payments is not None:
            token = await payments.purchase_token_of(event.intent_id)
            event = msgspec.structs.replace(event, purchase_token=token)
        apply = self._disputed if event.report == "disputed" else self._refunded
        return await Settlement(self._purchases).settle(event, meta, apply)

    async def _refunded(
        self, state: PurchaseState, version: int, event: WebhookEvent, meta: Metadata
    ) -> str:
        """`event.amount`: what the charge has had refunded in all. What exceeds what the
        purchase recorded was refunded outside the API."""
        refund = await self._store(
            state,
            version,
            meta,
            lambda _: refunds.report_refund(state, event.amount, refund_id=_new_id()),
        )
        if refund is None:
            return "nothing_new"
        return "refunded_outside" if refund.returned else "amount_recorded"

    async def _disputed(
        self, state: PurchaseState, version: int, event: WebhookEvent, meta: Metadata
    ) -> str:
        disputed = refunds.record_dispute(
            state,
            dispute_id=event.object_id,
            intent_id=event.intent_id,
            amount_cents=event.amount,
            reason=event.reason,
            status=event.status,
        )
        if not disputed:
            return "duplicate"
        stream = streams.purchase(state.opened.token)
        await append(self._pool, [PendingAppend(stream, version, disputed)], meta)
        return "disputed"

    async def disputes(self, organization_id: int, limit: int) -> list[asyncpg.Record]:
        return await disputes_read_model.listed(self._pool, organization_id, limit)

    # ---- refund requests ------------------------------------------------------------------

    async def request(
        self, code: str, email: str, reason: str | None, organization_id: int, meta: Metadata
    ) -> RefundRequestState:
        """A buyer asks for a ticket's refund, with the ticket's code and the purchase's
        e-mail: every miss (unknown code, another organization's, another e-mail) is the same
        404 after the same comparison. A ticket passed on, by the code the buyer had or its
        new one, is `409 ticket_already_transferred`."""
        handle = await handed_out.ticket_handle_by_code(self._pool, code)
        purchase = None
        if handle is not None and handle.organization_id == organization_id:
            purchase = await load_purchase(self._pool, handle.purchase_token)
        known = purchase.opened.buyer.email.lower().encode() if purchase else _NO_EMAIL
        matches = hmac.compare_digest(known, email.strip().lower().encode())
        ticket = None
        if matches and handle is not None:
            ticket, _ = await load_ticket(self._pool, handle.ticket_id)
        if not matches:
            raise NotFound("ticket not found", "code")
        request_id = _new_id()
        events = refunds.request_refund(
            purchase, ticket, request_id=request_id, reason=reason, now=datetime.now(UTC)
        )
        stream = streams.refund_request(request_id)
        await append(self._pool, [PendingAppend(stream, streams.NEW, events)], meta)
        return self._wrote(_request_from(events))

    async def approve(
        self, request_id: str, organization_id: int, meta: Metadata
    ) -> tuple[RefundRequestState, RefundDecided]:
        """Refunds the request's ticket and approves the request in one append."""
        for _ in range(MAX_ATTEMPTS):
            request, request_version = await self._request(request_id, organization_id)
            token = request.requested.purchase_token
            state, version = await self._purchases.load(token)
            org = await self._purchases.catalog.organization(organization_id)
            decide = functools.partial(
                refunds.approve_request,
                request,
                state,
                refund_id=_new_id(),
                refund_fee=org.refund_service_fee,
                now=datetime.now(UTC),
            )
            also = {streams.refund_request(request_id): request_version}
            try:
                refund = await self._store(state, version, meta, decide, also)
            except ConcurrencyError:
                continue
            assert state is not None and refund is not None
            for event in refund.events[streams.refund_request(request_id)]:
                refunds.evolve_refund_request(request, event)
            return self._wrote(request), _decided(refund, token)
        raise ConcurrencyError(streams.refund_request(request_id), "approval kept conflicting")

    async def decline(
        self, request_id: str, organization_id: int, reason: str | None, meta: Metadata
    ) -> RefundRequestState:
        for _ in range(MAX_ATTEMPTS):
            request, version = await self._request(request_id, organization_id)
            events = refunds.decline(request, reason, datetime.now(UTC))
            stream = streams.refund_request(request_id)
            try:
                await append(self._pool, [PendingAppend(stream, version, events)], meta)
            except ConcurrencyError:
                continue
            for event in events:
                refunds.evolve_refund_request(request, event)
            return self._wrote(request)
        raise ConcurrencyError(streams.refund_request(request_id), "decline kept conflicting")

    async def _request(
        self, request_id: str, organization_id: int
    ) -> tuple[RefundRequestState, int]:
        """The request straight from its stream (another organization's is not found)."""
        recorded = await read_stream(self._pool, streams.refund_request(request_id[:64]))
        state = refunds.replay_refund_request(r.event() for r in recorded)
        if state is None or state.requested.organization_id != organization_id:
            raise NotFound("refund request not found", "request_id")
        return state, len(recorded)

    async def find_request(self, request_id: str, organization_id: int) -> RefundRequestState:
        return (await self._request(request_id, organization_id))[0]

    async def requests(
        self, organization_id: int, status: str | None, ticket: str | None, limit: int
    ) -> list[asyncpg.Record]:
        await self._listed_as_written(organization_id)
        return await requests_read_model.listed(
            self._pool, organization_id, status=status, ticket=ticket, limit=limit
        )

    def _wrote(self, request: RefundRequestState) -> RefundRequestState:
        requested = request.requested
        now = self._forget_old()
        self._written[requested.request_id] = (requested.organization_id, request.status, now)
        return request

    def _forget_old(self) -> float:
        """Drops the requests written longer ago than WRITTEN_SECONDS (on every write too, so
        a gateway whose list is never asked keeps no more than the last few seconds')."""
        now = time.monotonic()
        self._written = {
            rid: written
            for rid, written in self._written.items()
            if now - written[2] < WRITTEN_SECONDS
        }
        return now

    async def _listed_as_written(self, organization_id: int) -> None:
        """Until the read model shows the organization's requests this process created or
        decided in the last WRITTEN_SECONDS as it answered them (WAIT_SECONDS at most): a
        partner listing the requests right after creating or approving one finds it, in its
        new status, where the projector applies it some milliseconds later. Requests written
        by other processes are listed once projected."""
        now = self._forget_old()
        waiting = {
            rid: status for rid, (org, status, _) in self._written.items() if org == organization_id
        }
        deadline = now + WAIT_SECONDS
        while waiting:
            shown = await requests_read_model.statuses(self._pool, list(waiting))
            waiting = {rid: s for rid, s in waiting.items() if shown.get(rid) != s}
            if not waiting or time.monotonic() >= deadline:
                return
            await asyncio.sleep(WAIT_STEP_SECONDS)


def _decided(refund: Refund, token: str) -> RefundDecided:
    (decided,) = refund.events[streams.purchase(token)]
    assert isinstance(decided, RefundDecided)
    return decided


def _request_from(events: list[Event]) -> RefundRequestState:
    state = refunds.replay_refund_request(events)
    assert state is not None
    return state
