"""Purchase use cases: open a purchase with its holds and discount use in one append, take the
payment through Stripe, cancel and expire (what Stripe reports then is settled in
services/usecases/settlement.py). The decisions are the domain's (domain/sales.py,
domain/purchasing.py); this module finds the aggregates, draws what a decision needs (ids,
codes, the clock), queues the commands at their desks and talks to Stripe. With several
gateways, a purchase is opened by the gateway that owns its inventory's stream
(services/usecases/desk_owners.py): the others send it there, and take its payment."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import msgspec
import structlog

from domain import catalog, discounts, purchasing, sales, streams, venues
from domain.errors import DomainError, NotFound
from domain.events import Event
from domain.inventory import holds
from domain.purchasing import PurchaseOpened, PurchaseRequest, PurchaseState
from domain.sales import PaymentProcessingUnavailable
from infra.append_batcher import AppendBatcher
from infra.coalesce import Coalesced
from infra.codes import random_code
from infra.eventstore import (
    ConcurrencyError,
    Metadata,
    PendingAppend,
    RecordedEvent,
    read_stream,
    read_streams,
)
from infra.payments import PaymentError, PaymentIntentRef, Payments
from projections import purchases as purchases_read_model
from services.usecases import catalog_commands, ticketing
from services.usecases.catalog_cache import Catalog
from services.usecases.desk import Aggregate, Desk, Desks, Kind
from services.usecases.desk_owners import DeskOwners, OwnerGone, OwnerSilent
from services.usecases.desk_seats import DeskSeats
from services.usecases.recent import Recent

log = structlog.get_logger(__name__)

UNAMBIGUOUS = "ACDEFGHJKLMNPQRTUVWXY34679"
TICKET_CODE_LENGTH = 12
ACCESS_CODE_LENGTH = 8
DISCOUNT_CODES = Aggregate(lambda: None, discounts.evolve_discount, discounts.clone_discount)
EVENT_INVENTORY = Kind(
    holds.EventInventory,
    holds.evolve_inventory,
    holds.clone_inventory,
    sales.decide,
    DISCOUNT_CODES,
    sales.seats_chosen,
)
ATTRACTION_INVENTORY = Kind(
    holds.AttractionInventory,
    holds.evolve_attraction,
    holds.clone_attraction,
    sales.decide,
    DISCOUNT_CODES,
)


class StripeFailed(DomainError):
    code = "stripe_error"


class RefusedByOwner(DomainError):
    """A refusal made by the desk of the gateway that owns the stream, with its code."""

    def __init__(self, code: str, detail: str, field: str | None) -> None:
        super().__init__(detail, field)
        self.code = code


# What a gateway sends the owner of an inventory stream, and what it answers.
class _OpenEvent(msgspec.Struct, frozen=True, tag=True):
    stream: str
    command: sales.OpenEventPurchase
    metadata: Metadata


class _OpenAttraction(msgspec.Struct, frozen=True, tag=True):
    stream: str
    command: sales.OpenAttractionPurchase
    metadata: Metadata


class _Opened(msgspec.Struct, frozen=True, tag=True):
    state: PurchaseState


class _Refused(msgspec.Struct, frozen=True, tag=True):
    code: str
    detail: str
    field: str | None


class _Failed(msgspec.Struct, frozen=True, tag=True):
    error: str


_encoder = msgspec.msgpack.Encoder()
_asks = msgspec.msgpack.Decoder(_OpenEvent | _OpenAttraction)
_answers = msgspec.msgpack.Decoder(_Opened | _Refused | _Failed)


# Purchases this process opened and took the payment of, kept for the report of that payment.
REMEMBERED_OPENINGS = 10_000


class Opening(NamedTuple):
    """A purchase as this process stored it: its state, its stream's version then and the
    metadata it was stored with."""

    state: PurchaseState
    version: int
    metadata: Metadata


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
        self.payments = payments
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
        self.catalog = Catalog(pool)
        self.ids = catalog_commands.IdReserve(writer or pool)
        self.hold = timedelta(minutes=hold_minutes)
        self._background: set[asyncio.Future[None]] = set()
        self._expected: set[tuple[int, str]] = set()
        self._openings: Recent[str, Opening] = Recent(REMEMBERED_OPENINGS)
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
        self, req: PurchaseRequest, organization_id: int, api_key_id: int | None, meta: Metadata
    ) -> PurchaseState:
        """Hold, open and (when there is something to pay) create the PaymentIntent."""
        purchasing.validate_request(req)
        org = await self.catalog.organization(organization_id)
        discount_id = None
        if req.discount_code:
            claim = catalog.claim_stream(
                "discount", req.discount_code.strip().upper(), org.organization_id
            )
            discount_id = await self.catalog.owner(claim)
            if discount_id is None:
                raise discounts.InvalidDiscountCode("unknown discount code", "discount_code")
        draft = await self._draft(req, api_key_id, discount_id)
        command: sales.OpenPurchase
        if req.event_slug is not None:
            sections, desk = await self._event_sale(org, req.event_slug)
            command = sales.OpenEventPurchase(
                request=req, organization=org, draft=draft, sections=sections
            )
        else:
            assert req.attraction_slug is not None
            attraction_id = await self._owner(
                org, "attraction", req.attraction_slug, "attraction_slug"
            )
            desk = self.desks.get(streams.attraction(attraction_id), ATTRACTION_INVENTORY)
            command = sales.OpenAttractionPurchase(request=req, organization=org, draft=draft)
        return await self._open(desk, command, meta)

    async def _open(
        self, desk: Desk[Any], command: sales.OpenPurchase, meta: Metadata
    ) -> PurchaseState:
        """Opened by the desk of the gateway that owns the stream: this one's, or the owner's
        over NATS. An owner that is gone is taken over at once; one that does not answer may
        still open the purchase, so this desk decides the same draft after it (`_open_again`).
        The owner only decides: the gateway that took the request creates the PaymentIntent
        (`_take_payment`), so N gateways share the Stripe calls instead of the owner making
        every one of them while it decides for all."""
        owners = self.owners
        if owners is None:
            return await self._open_here(desk, command, meta)
        owner = await owners.owner_of(desk.stream_id)
        if owner == owners.me:
            return await self._open_here(desk, command, meta)
        ask = (
            _OpenEvent(desk.stream_id, command, meta)
            if isinstance(command, sales.OpenEventPurchase)
            else _OpenAttraction(desk.stream_id, command, meta)
        )
        try:
            answer = _answers.decode(await owners.ask(owner, _encoder.encode(ask)))
        except OwnerGone:
            await owners.take_over(desk.stream_id, owner)
            return await self._open_here(desk, command, meta)
        except OwnerSilent:
            answer = _Failed("no answer in time")
        match answer:
            case _Opened():
                return await self._paid_for(answer.state, meta)
            case _Refused():
                raise RefusedByOwner(answer.code, answer.detail, answer.field)
        log.warning("desk_owner_failed", stream=desk.stream_id, owner=owner, error=answer.error)
        return await self._paid_for(await self._open_again(desk, command, meta), meta)

    async def _paid_for(self, state: PurchaseState, meta: Metadata) -> PurchaseState:
        """A purchase the owner opened without taking its payment, with its PaymentIntent."""
        if state.status != "pending_payment" or state.intent_id is not None:
            return state
        return await self._take_payment(state, meta)

    async def _open_again(
        self, desk: Desk[Any], command: sales.OpenPurchase, meta: Metadata
    ) -> PurchaseState:
        """The owner may have opened the purchase after all: then this desk's decision of the
        same draft is refused (its seats taken by that very purchase) or cannot create the
        purchase's stream again, and the purchase the owner opened is the answer."""
        try:
            return await self._open_here(desk, command, meta)
        except DomainError:
            found, _ = await self.load(command.draft.token)
            if found is None:
                raise
            return found

    async def _open_here(
        self, desk: Desk[Any], command: sales.OpenPurchase, meta: Metadata, *, pay: bool = True
    ) -> PurchaseState:
        """Decided by this process's desk. A draft decided before (by an owner that answered
        too late) cannot open a second purchase: its purchase stream exists, so the append
        fails on it, and the purchase already opened is the answer. Without `pay` the purchase
        is only opened (for another gateway, which takes the payment)."""
        await desk.ready()
        await desk.after_pledges(command)
        forecast = desk.forecast(command) if pay else None
        try:
            if forecast is not None and self._can_charge(forecast.result[0]):
                with desk.pledge(command):
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
        ask = _asks.decode(data)
        kind = EVENT_INVENTORY if isinstance(ask, _OpenEvent) else ATTRACTION_INVENTORY
        desk: Desk[Any] = self.desks.get(ask.stream, kind)
        if self.owners is not None:
            self.owners.touch(ask.stream)
        with structlog.contextvars.bound_contextvars(request_id=ask.metadata.request_id):
            try:
                state = await self._open_here(desk, ask.command, ask.metadata, pay=False)
            except DomainError as exc:
                return _encoder.encode(_Refused(exc.code, exc.detail, exc.field))
            except Exception as exc:
                log.warning("routed_purchase_failed", stream=ask.stream, error=repr(exc))
                return _encoder.encode(_Failed(repr(exc)))
        return _encoder.encode(_Opened(state))

    async def _draft(
        self, req: PurchaseRequest, api_key_id: int | None, discount_id: int | None
    ) -> sales.Draft:
        ids = await self.ids.take(sum(req.quantities.values()))
        now = datetime.now(UTC)
        return sales.Draft(
            token=secrets.token_urlsafe(18),
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

    def _can_charge(self, opened: PurchaseOpened) -> bool:
        """Whether Stripe takes this purchase's payment: there is something to pay, and the
        service and the organization can take payments."""
        return (
            self.payments is not None
            and opened.stripe_account_id is not None
            and opened.pricing.total_cents > 0
        )

    async def _pay_first(
        self,
        desk: Desk[Any],
        command: sales.OpenPurchase,
        forecast: PurchaseOpened,
        meta: Metadata,
    ) -> PurchaseState:
        """When the desk's last stored state says the purchase will go through, the
        PaymentIntent is created first and recorded in the append that holds the seats: one
        commit on the buyer's way instead of two. Should the desk refuse after all (another
        process sold the seats), the intent, which no buyer has seen, is cancelled; unless the
        draft's purchase was opened already (by an owner that answered too late): the intent,
        created under the purchase's token as idempotency key, is that purchase's."""
        intent = await self._create_intent(forecast)
        prepaid = sales.PrepaidIntent(
            intent_id=intent.id,
            client_secret=intent.client_secret,
            amount_cents=forecast.pricing.total_cents,
        )
        paying = sales.with_intent(command, prepaid)
        try:
            events = await desk.submit(paying, meta, sales.discount_streams(paying))
        except BaseException as exc:
            opened = streams.purchase(command.draft.token)
            if not (isinstance(exc, ConcurrencyError) and exc.stream_id == opened):
                self._abandon(intent.id)
            raise
        state = purchasing.replay_purchase(events)
        assert state is not None
        return self._remember(Opening(state, len(events), meta))

    async def _take_payment(self, state: PurchaseState, meta: Metadata) -> PurchaseState:
        """The PaymentIntent for a purchase already opened; its hold is released when Stripe
        cannot be reached."""
        opened = state.opened
        if not self._can_charge(opened):
            await self.release(opened.token, "payment_processing_unavailable", meta)
            raise PaymentProcessingUnavailable("payments are not configured")
        try:
            intent = await self._create_intent(opened)
        except StripeFailed:
            await self.release(opened.token, "stripe_error", meta)
            raise
        created = _intent_created(opened, intent)
        version = 1  # the purchase's stream holds its opening alone
        await self.recorder.append(
            [PendingAppend(streams.purchase(opened.token), version, [created])], meta
        )
        paying = purchasing.evolve_purchase(state, created) or state
        return self._remember(Opening(paying, version + 1, meta))

    def _remember(self, opening: Opening) -> PurchaseState:
        return self._openings.keep(opening.state.opened.token, opening).state

    def opening(self, token: str) -> Opening | None:
        """The purchase as this process stored it when it took its payment, given once: Stripe's
        report of that payment is decided on it without reading the stream first (about half
        of a webhook's time in an on-sale, behind the buyers' polls). Its version makes the
        append fail should anything have changed the stream since; the report is then decided
        again on the stream as read."""
        return self._openings.pop(token, None)

    async def _create_intent(self, opened: PurchaseOpened) -> PaymentIntentRef:
        assert self.payments is not None and opened.stripe_account_id is not None
        try:
            return await self.payments.create_intent(
                purchase_token=opened.token,
                amount_cents=opened.pricing.total_cents,
                currency=opened.pricing.currency.lower(),
                connected_account_id=opened.stripe_account_id,
                description=f"{opened.product_name} ({len(opened.tickets)} tickets)",
            )
        except PaymentError as exc:
            log.warning("payment_intent_failed", token=opened.token, error=str(exc))
            raise StripeFailed("the payment could not be started; nothing was held") from None

    def _abandon(self, intent_id: str) -> None:
        """Cancels an intent no buyer was given, in the background (best effort: one left
        behind can never be paid, as nobody has its client secret). The one cancel made from
        a request's path: no stored event can decide it, as the purchase was never stored; and
        should the append have been stored after all (its answer lost), the purchase was never
        shown to anyone, simply cannot be paid, and expires."""
        self._in_background(self._cancel_intent(intent_id))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_intent(self, intent_id: str) -> None:
        assert self.payments is not None
        try:
            await self.payments.cancel_intent(intent_id)
        except PaymentError as exc:
            log.warning("payment_intent_cancel_failed", intent_id=intent_id, error=str(exc))

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

    # ---- ending --------------------------------------------------------------------------

    async def cancel(self, token: str, organization_id: int, meta: Metadata) -> None:
        """Its PaymentIntent is cancelled at Stripe by the payments worker once the cancellation
        is stored (services/workers/payment_effects.py), not on the partner's request."""
        await self.find(token, organization_id)
        await self.release(
            token, "cancelled", meta, decide=lambda s: purchasing.cancel(s, "cancelled")
        )

    async def expire(self, token: str, meta: Metadata) -> bool:
        """`meta` names who expires it (the sweeper): a timer, so the expiry is recorded as
        caused by the purchase's opening, whose deadline passed, in its chain."""
        now = datetime.now(UTC)
        return await self.release(
            token, "expired", meta, decide=lambda s: purchasing.expire(s, now), timed_out=True
        )

    async def release(
        self,
        token: str,
        reason: str,
        meta: Metadata,
        *,
        decide: Callable[[PurchaseState], list[Event]] | None = None,
        timed_out: bool = False,
    ) -> bool:
        """End an unpaid purchase and give back its holds and discount use, in one append at
        the inventory's desk. `decide` says what ends the purchase (default: cancelled for
        the reason); returns False when there was nothing to end. `timed_out`: caused by the
        purchase's opening rather than by whoever `meta` names."""
        recorded = await read_stream(self.pool, streams.purchase(token))
        state, version = purchase_from(recorded)
        if state is None:
            raise NotFound("purchase not found", "token")
        if timed_out:
            meta = meta.caused_by(recorded[0])
        ending = (decide or (lambda s: [purchasing.PurchaseCancelled(token=token, reason=reason)]))(
            state
        )
        if not ending:
            return False
        command = sales.ReleaseHolds(
            opened=state.opened, reason=reason, ending=ending, purchase_version=version
        )
        await self.inventory_desk(state.opened).submit(
            command, meta, sales.discount_streams(command)
        )
        return True

    def inventory_desk(self, opened: PurchaseOpened) -> Any:
        """The sales desk of the event or attraction the purchase holds from."""
        if opened.event_id is not None:
            return self.desks.get(streams.event(opened.event_id), EVENT_INVENTORY)
        assert opened.attraction_id is not None
        return self.desks.get(streams.attraction(opened.attraction_id), ATTRACTION_INVENTORY)

    async def due_for_expiry(self, now: datetime, limit: int = 500) -> list[str]:
        return await purchases_read_model.due_for_expiry(self.pool, now, limit)


def _intent_created(
    opened: PurchaseOpened, intent: PaymentIntentRef
) -> purchasing.PaymentIntentCreated:
    return purchasing.PaymentIntentCreated(
        token=opened.token, intent_id=intent.id, client_secret=intent.client_secret
    )


def purchase_from(recorded: list[RecordedEvent]) -> tuple[PurchaseState | None, int]:
    return purchasing.replay_purchase(r.event() for r in recorded), len(recorded)
