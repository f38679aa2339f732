"""Purchase use cases: open a purchase with its holds and discount use in one append and take the
payment through Stripe (what Stripe reports then is settled in services/usecases/settlement.py;
an unpaid purchase is cancelled or expired by services/usecases/purchase_endings.py). The
decisions are the domain's (domain/sales.py, which opens a purchase in domain/purchase_opening.py
and ends it in domain/purchase_settling.py, and domain/purchasing.py); this module finds the
aggregates, draws what a decision needs (ids, codes, the clock) and queues the commands
(domain/sale_commands.py) at their desks; the PaymentIntents are made and cancelled by
services/usecases/intents.py. With several gateways, a purchase is opened by the gateway that
owns its inventory's stream (services/usecases/desk_owners.py): the others send it there
(services/usecases/routed_purchases.py), and take its payment."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from domain import catalog, discounts, purchasing, sale_commands, sales, streams, venues
from domain.errors import DomainError, NotFound
from domain.inventory import holds
from domain.purchase_opening import PaymentProcessingUnavailable
from domain.purchasing import PurchaseOpened, PurchaseRequest, PurchaseState
from infra.append_batcher import AppendBatcher
from infra.coalesce import Coalesced
from infra.codes import random_code
from infra.eventstore import (
    ConcurrencyError,
    Metadata,
    PendingAppend,
    read_streams,
)
from infra.idempotency import Claim
from infra.payments import Payments
from services.usecases import catalog_commands, routed_purchases, ticketing
from services.usecases.catalog_cache import Catalog
from services.usecases.desk import Desk
from services.usecases.desk_owners import DeskOwners, OwnerGone
from services.usecases.desk_seats import DeskSeats
from services.usecases.intents import Intents, Opening, StripeFailed, intent_created
from services.usecases.purchase_endings import Endings
from services.usecases.sales_desks import ATTRACTION_INVENTORY, EVENT_INVENTORY, Desks
from services.usecases.ticketing import purchase_from

log = structlog.get_logger(__name__)

UNAMBIGUOUS = "ACDEFGHJKLMNPQRTUVWXY34679"
TICKET_CODE_LENGTH = 12
ACCESS_CODE_LENGTH = 8


def _code(length: int) -> str:
    return random_code(UNAMBIGUOUS, length)


class Purchases:
    def __init__(
        self,
        pool: asyncpg.Pool,
        payments: Payments | None,
        *,
        publishable_key: str | None = None,
        hold_minutes: float = 30.0,
        writer: asyncpg.Pool | None = None,
    ) -> None:
        """`writer`: connections for the desks, the recorder and ticket ids alone, so the
        appends that hold seats and record payments never queue behind reads for a
        connection."""
        self.pool = pool
        self.intents = Intents(payments)
        self.publishable_key = publishable_key
        self.desks = Desks(writer or pool, snapshot_pool=pool)
        self.seats = DeskSeats(self.desks, EVENT_INVENTORY)
        self.recorder = AppendBatcher(writer or pool)
        # The gates' scans are group-committed with the payments: neither decides on another.
        self.gate = ticketing.Gate(pool, self.recorder)
        # Buyers' polls and Stripe's webhooks read purchase streams by the hundred at once in
        # an on-sale: one round trip for all that ask together, not a pool connection each.
        self.reads = Coalesced(lambda ids: read_streams(pool, ids), [])
        self.polls = ticketing.Polls(self.reads, self.find)
        self.endings = Endings(pool, self.desks, self.find)
        self.catalog = Catalog(pool)
        self.ids = catalog_commands.IdReserve(writer or pool)
        self.hold = timedelta(minutes=hold_minutes)
        self._background: set[asyncio.Future[None]] = set()
        self._expected: set[tuple[int, str]] = set()
        self.owners: DeskOwners | None = None

    async def route(self, owners: DeskOwners) -> None:
        """Open purchases at the desk of the gateway that owns the stream, and answer those
        other gateways send this one."""
        self.owners = owners
        await owners.serve(self._answer)

    async def close(self) -> None:
        """At shutdown, once the gateway takes no more requests."""
        if self.owners is not None:
            await self.owners.close()
        await self.desks.close()
        await self.recorder.close()
        await self.intents.close()
        await asyncio.gather(*self._background, return_exceptions=True)

    # ---- opening -------------------------------------------------------------------------

    def expect(self, organization_id: int, event_slug: str) -> None:
        """A buyer asking for seats is about to buy them: what a purchase of the event needs
        (catalog entries, the desk's state, a block of ticket ids) is read now, in the
        background, rather than by the first few hundred purchases of an on-sale at once."""
        key = (organization_id, event_slug)
        if key not in self._expected:
            self._expected.add(key)
            self._in_background(self._prepare(organization_id, event_slug))

    async def _prepare(self, organization_id: int, event_slug: str) -> None:
        try:
            org = await self.catalog.organization(organization_id)
            _, desk = await self._event_sale(org, event_slug)
            self.ids.prefetch()
            await desk.ready()
            if self.owners is not None:
                await self.owners.owner_of(desk.stream_id)
        except Exception as exc:
            self._expected.discard((organization_id, event_slug))
            log.info("purchase_preparation_failed", event_slug=event_slug, error=repr(exc))

    async def place(
        self,
        req: PurchaseRequest,
        organization_id: int,
        api_key_id: int | None,
        meta: Metadata,
        claim: Claim | None = None,
    ) -> PurchaseState:
        """Hold, open and (when there is something to pay) create the PaymentIntent. Under an
        idempotency key's `claim` the purchase's token is the claim's: a request that takes over
        the key of one whose process died before answering finds the purchase that one stored
        (`_found_again`) instead of opening a second."""
        purchasing.validate_request(req)
        if claim is not None and claim.retaken:
            found, _ = await self.load(claim.reserved)
            if found is not None:
                return await self._found_again(found, meta)
        org = await self.catalog.organization(organization_id)
        discount_id = None
        code = (req.discount_code or "").strip().upper()
        if code:  # a blank field of the shop's form is no code, as for the pricing preview
            claimed = catalog.claim_stream("discount", code, org.organization_id)
            discount_id = await self.catalog.owner(claimed)
            if discount_id is None:
                raise discounts.InvalidDiscountCode("unknown discount code", "discount_code")
        token = claim.reserved if claim is not None else secrets.token_urlsafe(18)
        draft = await self._draft(req, token, api_key_id, discount_id)
        command: sale_commands.OpenPurchase
        if req.event_slug is not None:
            sections, desk = await self._event_sale(org, req.event_slug)
            command = sale_commands.OpenEventPurchase(
                request=req, organization=org, draft=draft, sections=sections
            )
        else:
            assert req.attraction_slug is not None
            attraction_id = await self._owner(
                org, "attraction", req.attraction_slug, "attraction_slug"
            )
            desk = self.desks.get(streams.attraction(attraction_id), ATTRACTION_INVENTORY)
            command = sale_commands.OpenAttractionPurchase(
                request=req, organization=org, draft=draft
            )
        if claim is None:
            return await self._open(desk, command, meta)
        opened = await self._or_found(token, self._open(desk, command, meta))
        return await self._found_again(opened, meta)

    async def _found_again(self, found: PurchaseState, meta: Metadata) -> PurchaseState:
        """The purchase stored under a claim's token, as the answer to the request under its
        key: with its PaymentIntent taken now should the request that opened it have died
        first. One released because its payment could not be started was a 502 (not kept for
        the key), and is again."""
        if _unstarted(found):
            raise StripeFailed("the payment could not be started; nothing was held")
        return await self._paid_for(found, meta)

    async def _open(
        self, desk: Desk[Any], command: sale_commands.OpenPurchase, meta: Metadata
    ) -> PurchaseState:
        """Opened by the desk of the gateway that owns the stream: this one's, or the owner's
        over NATS. An owner that is gone is taken over at once; one that does not answer may
        still open the purchase, so this desk decides the same draft after it (`_or_found`).
        The owner only decides: the gateway that took the request creates the PaymentIntent
        (`_take_payment`), so N gateways share the Stripe calls instead of the owner making
        every one of them while it decides for all."""
        owners = self.owners
        if owners is None:
            return await self._open_here(desk, command, meta)
        owner = await owners.owner_of(desk.stream_id)
        if owner == owners.me:
            return await self._open_here(desk, command, meta)
        try:
            state = await routed_purchases.ask_owner(owners, owner, desk.stream_id, command, meta)
        except OwnerGone:
            await owners.take_over(desk.stream_id, owner)
            return await self._open_here(desk, command, meta)
        except routed_purchases.OwnerFailed as exc:
            log.warning("desk_owner_failed", stream=desk.stream_id, owner=owner, error=str(exc))
            state = await self._or_found(command.draft.token, self._open_here(desk, command, meta))
        return await self._paid_for(state, meta)

    async def _paid_for(self, state: PurchaseState, meta: Metadata) -> PurchaseState:
        """A purchase the owner opened without taking its payment, with its PaymentIntent."""
        if state.status != "pending_payment" or state.intent_id is not None:
            return state
        return await self._take_payment(state, meta)

    async def _or_found(
        self, token: str, opening: Coroutine[Any, Any, PurchaseState]
    ) -> PurchaseState:
        """A draft may have been decided before: by an owner that answered too late, or by a
        request under the same idempotency key whose gateway died. Then deciding it again is
        refused (its seats taken by that very purchase) or cannot create the purchase's stream
        again, and the purchase opened then is the answer; unless it was released as its
        payment could not be started, when the refusal stands."""
        try:
            return await opening
        except DomainError:
            found, _ = await self.load(token)
            if found is None or _unstarted(found):
                raise
            return found

    async def _open_here(
        self,
        desk: Desk[Any],
        command: sale_commands.OpenPurchase,
        meta: Metadata,
        *,
        pay: bool = True,
    ) -> PurchaseState:
        """Decided by this process's desk. A draft decided before (by an owner that answered
        too late) cannot open a second purchase: its purchase stream exists, so the append
        fails on it, and the purchase already opened is the answer. Without `pay` the purchase
        is only opened (for another gateway, which takes the payment)."""
        await desk.ready()
        await desk.pledges.wait_for(command)
        forecast = desk.forecast(command) if pay else None
        try:
            if forecast is not None and self.intents.can_charge(forecast.result[0]):
                with desk.pledges.pledge(command):
                    return await self._pay_first(desk, command, forecast.result[0], meta)
            events = await desk.submit(command, meta, sales.discount_streams(command))
        except ConcurrencyError as exc:
            found = None
            if exc.stream_id == streams.purchase(command.draft.token):
                found, _ = await self.load(command.draft.token)
            if found is None:
                raise
            return found
        state = purchasing.replay_purchase(events)
        assert state is not None
        if state.status == "paid" or not pay:
            return state
        return await self._take_payment(state, meta)

    async def _answer(self, data: bytes) -> bytes:
        """A purchase another gateway sends this one, the owner of its stream, to open; its
        payment is taken by the gateway that asks."""
        stream, command, meta = routed_purchases.asked(data)
        event = isinstance(command, sale_commands.OpenEventPurchase)
        desk: Desk[Any] = self.desks.get(stream, EVENT_INVENTORY if event else ATTRACTION_INVENTORY)
        if self.owners is not None:
            self.owners.touch(stream)
        with structlog.contextvars.bound_contextvars(request_id=meta.request_id):
            try:
                state = await self._open_here(desk, command, meta, pay=False)
            except DomainError as exc:
                return routed_purchases.refused(exc)
            except Exception as exc:
                log.warning("routed_purchase_failed", stream=stream, error=repr(exc))
                return routed_purchases.failed(exc)
        return routed_purchases.opened(state)

    async def _draft(
        self, req: PurchaseRequest, token: str, api_key_id: int | None, discount_id: int | None
    ) -> sale_commands.Draft:
        ids = await self.ids.take(sum(req.quantities.values()))
        now = datetime.now(UTC)
        return sale_commands.Draft(
            token=token,
            ticket_ids=ids,
            codes=[_code(TICKET_CODE_LENGTH) for _ in ids],
            attendee_tokens=["tok_" + secrets.token_hex(16) for _ in ids],
            access_code=_code(ACCESS_CODE_LENGTH),
            now=now,
            expires_at=now + self.hold,
            api_key_id=api_key_id,
            discount_id=discount_id,
        )

    async def _owner(
        self, org: catalog.OrganizationRegistered, kind: str, slug: str, field: str
    ) -> int:
        owner = await self.catalog.owner(catalog.claim_stream(kind, slug, org.organization_id))
        if owner is None:
            raise NotFound(f"{kind} not found", field)
        return owner

    async def _event_sale(
        self, org: catalog.OrganizationRegistered, slug: str
    ) -> tuple[list[venues.Section], Desk[holds.EventInventory]]:
        """The event's seat map and the desk that sells it."""
        event_id = await self._owner(org, "event", slug, "event_slug")
        sections = await self.catalog.sections_of_event(event_id)
        return sections, self.desks.get(streams.event(event_id), EVENT_INVENTORY)

    async def _pay_first(
        self,
        desk: Desk[Any],
        command: sale_commands.OpenPurchase,
        forecast: PurchaseOpened,
        meta: Metadata,
    ) -> PurchaseState:
        """When the desk's last stored state says the purchase will go through, the
        PaymentIntent is created first and recorded in the append that holds the seats: one
        commit on the buyer's way instead of two. Should the desk refuse after all (another
        process sold the seats), the intent, which no buyer has seen, is cancelled. Not when
        the append's outcome is unknown (the database went away): the purchase may be stored,
        and a retry under the same Idempotency-Key keeps the purchase's token, under which
        Stripe answers with this very intent (its idempotency key): cancelled, the retry's 201
        named an intent nobody could pay. Nor when the draft's purchase was opened already
        (by an owner that answered too late): the intent is that purchase's."""
        intent = await self.intents.create(forecast)
        prepaid = sale_commands.PrepaidIntent(
            intent_id=intent.id,
            client_secret=intent.client_secret,
            amount_cents=forecast.pricing.total_cents,
        )
        paying = sale_commands.with_intent(command, prepaid)
        try:
            events = await desk.submit(paying, meta, sales.discount_streams(paying))
        except holds.DecidedBefore:
            raise  # the intent is the purchase's decided before: `_or_found` answers with it
        except DomainError:
            self.intents.abandon(intent.id)
            raise
        state = purchasing.replay_purchase(events)
        assert state is not None
        return self.intents.remember(Opening(state, len(events), meta))

    async def _take_payment(self, state: PurchaseState, meta: Metadata) -> PurchaseState:
        """The PaymentIntent for a purchase already opened; its hold is released when Stripe
        cannot be reached."""
        opened = state.opened
        if not self.intents.can_charge(opened):
            await self.endings.release(opened.token, "payment_processing_unavailable", meta)
            raise PaymentProcessingUnavailable("payments are not configured")
        try:
            intent = await self.intents.create(opened)
        except StripeFailed:
            await self.endings.release(opened.token, "stripe_error", meta)
            raise
        created = intent_created(opened, intent)
        version = 1  # the purchase's stream holds its opening alone
        await self.recorder.append(
            [PendingAppend(streams.purchase(opened.token), version, [created])], meta
        )
        paying = purchasing.evolve_purchase(state, created) or state
        return self.intents.remember(Opening(paying, version + 1, meta))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- reading -------------------------------------------------------------------------

    async def load(self, token: str) -> tuple[PurchaseState | None, int]:
        """The purchase straight from its stream: never behind an acknowledged write."""
        return purchase_from(await self.reads.get(streams.purchase(token)))

    async def find(self, token: str, organization_id: int) -> tuple[PurchaseState, int]:
        if len(token) > 64:
            raise NotFound("purchase not found", "token")
        state, version = await self.load(token)
        if state is None or state.opened.organization_id != organization_id:
            raise NotFound("purchase not found", "token")
        return state, version


def _unstarted(state: PurchaseState) -> bool:
    """Released as its payment could not be started (Stripe failed, or takes no payments)."""
    return state.status == "cancelled" and state.intent_id is None
