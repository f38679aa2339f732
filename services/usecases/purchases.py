"""Purchase commands: open a purchase with its holds and discount use in one append, take the
payment through Stripe, cancel, expire, and settle a payment that arrives late. The decisions
are the domain's; this module finds the aggregates, queues at their desks and talks to Stripe."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import structlog

from domain import catalog, discounts, holds, purchasing, streams, tickets
from domain.errors import DomainError, NotFound
from domain.events import Event
from domain.inventory import AttractionTicketsHeld, HeldSeat, SeatRef, SeatsHeld
from domain.pricing import price_basket
from domain.purchasing import PurchaseOpened, PurchaseRequest, PurchaseState
from domain.seating import RowKey
from infra.append_batcher import AppendBatcher
from infra.codes import random_code
from infra.eventstore import (
    NO_STREAM,
    ConcurrencyError,
    Metadata,
    PendingAppend,
    RecordedEvent,
    read_stream,
)
from infra.payments import PaymentError, PaymentIntentRef, Payments, WebhookEvent
from services.usecases import catalog_commands
from services.usecases.catalog_cache import Catalog
from services.usecases.desk import Command, Decision, Desk, Desks, Kind, Session

log = structlog.get_logger(__name__)

UNAMBIGUOUS = "ACDEFGHJKLMNPQRTUVWXY34679"
TICKET_CODE_LENGTH = 12
ACCESS_CODE_LENGTH = 8
MAX_SETTLE_ATTEMPTS = 5
EVENT_INVENTORY = Kind(holds.EventInventory, holds.evolve_inventory, holds.clone_inventory)
ATTRACTION_INVENTORY = Kind(
    holds.AttractionInventory, holds.evolve_attraction, holds.clone_attraction
)


class PaymentProcessingUnavailable(DomainError):
    code = "payment_processing_unavailable"


class StripeFailed(DomainError):
    code = "stripe_error"


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
        self.desks = Desks(writer or pool)
        self.recorder = AppendBatcher(writer or pool)
        self.catalog = Catalog(pool)
        self.ids = catalog_commands.IdReserve(writer or pool)
        self.hold = timedelta(minutes=hold_minutes)
        self._background: set[asyncio.Future[None]] = set()
        self._expected: set[tuple[int, str]] = set()

    async def close(self) -> None:
        """At shutdown, once the gateway takes no more requests."""
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
        discount_ids = (discount_id,) if discount_id else ()
        draft = await self._draft(req, api_key_id, discount_id)
        if req.event_slug is not None:
            sections, desk = await self._event_sale(org, req.event_slug)
            command = _open_event_purchase(req, org, draft, sections)
        else:
            assert req.attraction_slug is not None
            attraction_id = await self._owner(
                org, "attraction", req.attraction_slug, "attraction_slug"
            )
            desk = self.desks.get(streams.attraction(attraction_id), ATTRACTION_INVENTORY)
            command = _open_attraction_purchase(req, org, draft)
        await desk.ready()
        forecast = desk.forecast(command)
        if forecast is not None and self._can_charge(forecast.result[0]):
            return await self._pay_first(desk, command, forecast.result[0], meta, discount_ids)
        state = purchasing.replay_purchase(await desk.submit(command, meta, discount_ids))
        assert state is not None
        if state.status == "paid":
            return state
        return await self._take_payment(state, meta)

    async def _draft(
        self, req: PurchaseRequest, api_key_id: int | None, discount_id: int | None
    ) -> Draft:
        ids = await self.ids.take(sum(req.quantities.values()))
        now = datetime.now(UTC)
        return Draft(
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
    ) -> tuple[list[catalog.Section], Desk[holds.EventInventory]]:
        """The event's seat map and the desk that sells it."""
        event_id = await self._owner(org, "event", slug, "event_slug")
        sections = await self.catalog.sections_of_event(event_id)
        return sections, self.desks.get(streams.event(event_id), EVENT_INVENTORY)

    async def held_seats(self, event_id: int, within: float) -> dict[RowKey, set[int]]:
        """The seats the event's stream holds, per row, as this process's sales desk has them,
        read again first unless the desk was in step with the stream within `within` seconds:
        what the availability read model may not show yet. Only read until the next await."""
        desk = self.desks.get(streams.event(event_id), EVENT_INVENTORY)
        await desk.catch_up(within)
        return desk.cached.state.taken_by_row

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
        command: Command,
        forecast: PurchaseOpened,
        meta: Metadata,
        discount_ids: tuple[int, ...],
    ) -> PurchaseState:
        """When the desk's last stored state says the purchase will go through, the
        PaymentIntent is created first and recorded in the append that holds the seats: one
        commit on the buyer's way instead of two. Should the desk refuse after all (another
        process sold the seats), the intent, which no buyer has seen, is cancelled."""
        intent = await self._create_intent(forecast)
        try:
            events = await desk.submit(
                _paying_with(command, intent, forecast.pricing.total_cents), meta, discount_ids
            )
        except BaseException:
            self._abandon(intent.id)
            raise
        state = purchasing.replay_purchase(events)
        assert state is not None
        return state

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
        await self.recorder.append(
            [PendingAppend(streams.purchase(opened.token), 1, [created])], meta
        )
        return purchasing.evolve_purchase(state, created) or state

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
        return _purchase_from(await read_stream(self.pool, streams.purchase(token)))

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
        now = datetime.now(UTC)
        return await self.release(
            token, "expired", meta, decide=lambda s: purchasing.expire(s, now)
        )

    async def release(
        self,
        token: str,
        reason: str,
        meta: Metadata,
        *,
        decide: Callable[[PurchaseState], list[Event]] | None = None,
    ) -> bool:
        """End an unpaid purchase and give back its holds and discount use, in one append at
        the inventory's desk. `decide` says what ends the purchase (default: cancelled for
        the reason); returns False when there was nothing to end."""
        state, version = await self.load(token)
        if state is None:
            raise NotFound("purchase not found", "token")
        ending = (decide or (lambda s: [purchasing.PurchaseCancelled(token=token, reason=reason)]))(
            state
        )
        if not ending:
            return False
        opened = state.opened
        desk = self._inventory_desk(opened)
        purchase = streams.purchase(token)

        def command(session: Session) -> Decision:
            if opened.event_id is not None:
                released = holds.release_seats(session.state, token, reason)
            else:
                released = holds.release_attraction_tickets(session.state, token, reason)
            events: dict[str, list[Event]] = {desk.stream_id: released, purchase: ending}
            if opened.discount_id is not None:
                code = session.discount(opened.discount_id)
                if code is not None:
                    events[streams.discount(opened.discount_id)] = discounts.release(code, token)
            return Decision(events, expected={purchase: version})

        await desk.submit(command, meta, _discounts(opened))
        return True

    def _inventory_desk(self, opened: PurchaseOpened) -> Any:
        if opened.event_id is not None:
            return self.desks.get(streams.event(opened.event_id), EVENT_INVENTORY)
        assert opened.attraction_id is not None
        return self.desks.get(streams.attraction(opened.attraction_id), ATTRACTION_INVENTORY)

    # ---- payments ------------------------------------------------------------------------

    async def settle(self, event: WebhookEvent, meta: Metadata) -> str:
        """Apply one Stripe event once; returns what was done (for the log): `duplicate` for
        an event already applied. What a Stripe event changes is appended with the event's id
        as causation id (`meta`), so the purchase's own stream says whether it was applied,
        in the read that loads it; an event that changes nothing may come again and again
        changes nothing."""
        if event.purchase_token is None:
            return "ignored"
        stream = streams.purchase(event.purchase_token)
        for _ in range(MAX_SETTLE_ATTEMPTS):
            recorded = await read_stream(self.pool, stream)
            if any(r.metadata.causation_id == event.id for r in recorded):
                return "duplicate"
            state, version = _purchase_from(recorded)
            if state is None:
                return "unknown_purchase"
            try:
                return await self._settle(state, version, event, meta)
            except ConcurrencyError:
                continue
        raise ConcurrencyError(stream, "settle")

    async def _settle(
        self, state: PurchaseState, version: int, event: WebhookEvent, meta: Metadata
    ) -> str:
        token = state.opened.token
        stream = streams.purchase(token)
        if event.type == "payment_intent.succeeded":
            if state.status == "paid":
                return "already_paid"
            if state.status == "pending_payment":
                times = await self.catalog.times(state.opened)
                paid = paid_with_tickets(state, event.intent_id, datetime.now(UTC), times)
                appends = [
                    PendingAppend(s, version if s == stream else NO_STREAM, events)
                    for s, events in paid.items()
                ]
                await self.recorder.append(appends, meta)
                return "paid"
            return await self._late_payment(state, version, event.intent_id, meta)
        if event.type == "payment_intent.payment_failed" and state.status == "pending_payment":
            failed = purchasing.PaymentFailed(
                token=token, intent_id=event.intent_id, reason=f"payment {event.status}"
            )
            await self.recorder.append([PendingAppend(stream, version, [failed])], meta)
            return "payment_failed"
        return "ignored"

    async def _late_payment(
        self, state: PurchaseState, version: int, intent_id: str, meta: Metadata
    ) -> str:
        """Money arrived for a purchase that had already let go of its seats: sell the same
        seats if they are still free, otherwise decide to give the money back. Either is one
        append at the purchase's version, so of concurrent deliveries of the payment one
        decides and the others find it decided (`duplicate`); the refund itself is made by the
        payments worker once its decision is stored."""
        opened = state.opened
        if state.refunded:
            return "refund_already_decided"
        desk = self._inventory_desk(opened)
        now = datetime.now(UTC)
        purchase = streams.purchase(opened.token)
        times = await self.catalog.times(opened)

        def command(session: Session) -> Decision:
            if opened.token in session.state.holds:
                # Another delivery of this payment has held the seats again, in this batch or
                # in one this delivery's read of the purchase did not see.
                raise ConcurrencyError(purchase, "the late payment was settled meanwhile")
            before = previous_hold(opened, now)
            if isinstance(before, SeatsHeld):
                held: Event = holds.rehold_seats(session.state, before, now)
            else:
                held = holds.rehold_attraction_tickets(session.state, before)
            paid = paid_with_tickets(state, intent_id, now, times, late=True)
            expected = dict.fromkeys(paid, NO_STREAM) | {purchase: version}
            return Decision({desk.stream_id: [held], **paid}, expected=expected)

        try:
            await desk.submit(command, meta)
            return "paid_late"
        except (
            holds.SeatsTaken,
            holds.InsufficientAvailability,
            holds.DailyCapacityExceeded,
        ) as exc:
            reason = exc.code
        refund = purchasing.decide_late_refund(state, intent_id, reason)
        if not refund:
            return "ignored"
        await self.recorder.append([PendingAppend(purchase, version, refund)], meta)
        return "refund_decided"

    async def due_for_expiry(self, now: datetime, limit: int = 500) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT token FROM rm_purchases.purchases WHERE status = 'pending_payment'"
            " AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
            now,
            limit,
        )
        return [r["token"] for r in rows]


def _intent_created(
    opened: PurchaseOpened, intent: PaymentIntentRef
) -> purchasing.PaymentIntentCreated:
    return purchasing.PaymentIntentCreated(
        token=opened.token, intent_id=intent.id, client_secret=intent.client_secret
    )


def _paying_with(command: Command, intent: PaymentIntentRef, amount_cents: int) -> Command:
    """`command`, with the intent created for its forecast recorded in the purchase it opens."""

    def decide(session: Session) -> Decision:
        decision = command(session)
        opened = decision.result[0]
        # The price comes from the draft (its clock) and the event's ticket types, which no
        # sale changes: the forecast's amount is the purchase's.
        assert opened.pricing.total_cents == amount_cents, "the price moved after the forecast"
        decision.result.append(_intent_created(opened, intent))
        return decision

    return decide


def _purchase_from(recorded: list[RecordedEvent]) -> tuple[PurchaseState | None, int]:
    return purchasing.replay_purchase(r.event() for r in recorded), len(recorded)


def _discounts(opened: PurchaseOpened) -> tuple[int, ...]:
    return (opened.discount_id,) if opened.discount_id is not None else ()


@dataclass(frozen=True)
class Product:
    """What is being bought, as the purchase and its tickets record it."""

    event_id: int | None
    attraction_id: int | None
    slug: str
    name: str
    starts_at: datetime | None = None
    ends_at: datetime | None = None


def paid_with_tickets(
    state: PurchaseState,
    intent_id: str | None,
    now: datetime,
    product_times: tuple[datetime | None, datetime | None],
    *,
    late: bool = False,
) -> dict[str, list[Event]]:
    """A payment and the tickets it issues, for one append: never a paid purchase without
    its tickets, never a ticket for an unpaid purchase."""
    paid = purchasing.pay(state, intent_id, now, late=late)
    if not paid:
        return {}
    opened = state.opened
    issued = tickets.issue_tickets(
        opened,
        now,
        starts_at=product_times[0],
        ends_at=product_times[1],
        named={t.id for t in opened.tickets if t.named},
    )
    return {streams.purchase(opened.token): paid, **issued}


@dataclass(frozen=True)
class Draft:
    """What is generated before the decision (randomness and ids are IO to the domain)."""

    token: str
    ticket_ids: list[int]
    codes: list[str]
    attendee_tokens: list[str]
    access_code: str
    now: datetime
    expires_at: datetime
    api_key_id: int | None
    discount_id: int | None


def _tickets(
    req: PurchaseRequest,
    draft: Draft,
    types: dict[int, catalog.TicketType],
    prices: dict[int, int],
    seats: dict[int, list[SeatRef]],
) -> list[purchasing.PurchasedTicket]:
    attendees = {(a.ticket_type_id, a.index): a for a in req.attendees}
    made = []
    i = 0
    for tid in sorted(req.quantities):
        for index in range(1, req.quantities[tid] + 1):
            attendee = attendees.get((tid, index))
            seat_list = seats.get(tid, [])
            made.append(
                purchasing.PurchasedTicket(
                    id=draft.ticket_ids[i],
                    code=draft.codes[i],
                    attendee_token=draft.attendee_tokens[i],
                    ticket_type_id=tid,
                    ticket_type_name=types[tid].name,
                    amount_cents=prices[tid],
                    seat=seat_list[index - 1] if index <= len(seat_list) else None,
                    name=(attendee.name if attendee and attendee.name else req.buyer.name),
                    email=(attendee.email if attendee and attendee.email else req.buyer.email),
                    named=bool(attendee and attendee.name),
                )
            )
            i += 1
    return made


def _open(
    req: PurchaseRequest,
    org: catalog.OrganizationRegistered,
    draft: Draft,
    session: Session,
    types: dict[int, catalog.TicketType],
    inventory: tuple[str, list[Event]],
    product: Product,
    seats: dict[int, list[SeatRef]],
) -> Decision:
    """The parts every purchase shares once its holds are decided: the discount use, the
    price, the payment precondition and the opened purchase."""
    quantities = {tid: n for tid, n in req.quantities.items() if n > 0}
    events: dict[str, list[Event]] = {inventory[0]: inventory[1]}
    discount = None
    if draft.discount_id is not None:
        code = session.discount(draft.discount_id)
        if code is None:
            raise discounts.InvalidDiscountCode("unknown discount code", "discount_code")
        events[streams.discount(draft.discount_id)] = discounts.redeem(
            code, draft.token, draft.now, set(quantities)
        )
        discount = code.created
    pricing = price_basket(types, quantities, org.fee, org.currency, draft.now, discount)
    if pricing.total_cents > 0 and org.stripe_account_id is None:
        raise PaymentProcessingUnavailable("the organization cannot take payments yet")
    prices = {line.ticket_type_id: line.unit_price_cents for line in pricing.line_items}
    opened = PurchaseOpened(
        token=draft.token,
        organization_id=org.organization_id,
        api_key_id=draft.api_key_id,
        event_id=product.event_id,
        attraction_id=product.attraction_id,
        product_slug=product.slug,
        product_name=product.name,
        visit_date=req.visit_date,
        buyer=req.buyer,
        tickets=_tickets(req, draft, types, prices, seats),
        pricing=pricing,
        discount_id=draft.discount_id,
        stripe_account_id=org.stripe_account_id,
        comment=req.comment,
        access_code=draft.access_code,
        opened_at=draft.now,
        expires_at=draft.expires_at,
    )
    stream = streams.purchase(draft.token)
    events[stream] = [opened]
    expected = {stream: NO_STREAM}
    if pricing.total_cents == 0:
        state = PurchaseState(opened=opened)
        issued = paid_with_tickets(state, None, draft.now, (product.starts_at, product.ends_at))
        events[stream] += issued.pop(stream)
        events |= issued
        expected |= dict.fromkeys(issued, NO_STREAM)
    return Decision(events, result=events[stream], expected=expected)


def _open_event_purchase(
    req: PurchaseRequest,
    org: catalog.OrganizationRegistered,
    draft: Draft,
    sections: list[catalog.Section],
) -> Callable[[Session], Decision]:
    def command(session: Session) -> Decision:
        inventory: holds.EventInventory = session.state
        scheduled = holds.check_on_sale(inventory.listing, draft.now)
        if scheduled.organization_id != org.organization_id:
            raise NotFound("event not found", "event_slug")
        types = inventory.ticket_types
        purchasing.check_ticket_types(
            req, {t.id: (t.name, t.max_per_purchase) for t in types.values()}
        )
        quantities = {tid: n for tid, n in req.quantities.items() if n > 0}
        held = holds.hold_seats(
            inventory,
            sections,
            token=draft.token,
            quantities=quantities,
            selected=dict(req.selected_seats or {}),
            now=draft.now,
            expires_at=draft.expires_at,
        )
        seats: dict[int, list[SeatRef]] = {}
        for seat in held.seats:
            seats.setdefault(seat.ticket_type_id, []).append(
                SeatRef(section_id=seat.section_id, row=seat.row, seat_number=seat.seat_number)
            )
        return _open(
            req,
            org,
            draft,
            session,
            types,
            (streams.event(scheduled.event_id), [held]),
            Product(
                event_id=scheduled.event_id,
                attraction_id=None,
                slug=scheduled.slug,
                name=scheduled.name,
                starts_at=scheduled.event_date,
                ends_at=scheduled.event_end_date,
            ),
            seats,
        )

    return command


def _open_attraction_purchase(
    req: PurchaseRequest, org: catalog.OrganizationRegistered, draft: Draft
) -> Callable[[Session], Decision]:
    def command(session: Session) -> Decision:
        inventory: holds.AttractionInventory = session.state
        opened = inventory.opened
        if opened is None or opened.organization_id != org.organization_id:
            raise NotFound("attraction not found", "attraction_slug")
        types = {t.id: t for t in opened.ticket_types}
        purchasing.check_ticket_types(
            req, {t.id: (t.name, t.max_per_purchase) for t in types.values()}
        )
        quantities = {tid: n for tid, n in req.quantities.items() if n > 0}
        held = holds.hold_attraction_tickets(
            inventory,
            token=draft.token,
            quantities=quantities,
            visit_date=req.visit_date,
            today=holds.local_date(draft.now, org.timezone),
            expires_at=draft.expires_at,
        )
        return _open(
            req,
            org,
            draft,
            session,
            types,
            (streams.attraction(opened.attraction_id), [held]),
            Product(
                event_id=None,
                attraction_id=opened.attraction_id,
                slug=opened.slug,
                name=opened.name,
                ends_at=None
                if req.visit_date is None
                else tickets.visit_day_end(req.visit_date, org.timezone),
            ),
            {},
        )

    return command


def previous_hold(opened: PurchaseOpened, expires_at: datetime) -> Event:
    """The hold a purchase had, rebuilt from what it bought (to re-hold after a late payment)."""
    counts: dict[int, int] = {}
    for t in opened.tickets:
        counts[t.ticket_type_id] = counts.get(t.ticket_type_id, 0) + 1
    if opened.attraction_id is not None:
        return AttractionTicketsHeld(
            attraction_id=opened.attraction_id,
            purchase_token=opened.token,
            visit_date=opened.visit_date,
            counts=counts,
            expires_at=expires_at,
        )
    assert opened.event_id is not None
    return SeatsHeld(
        event_id=opened.event_id,
        purchase_token=opened.token,
        seats=[
            HeldSeat(ticket_type_id=t.ticket_type_id, **msgspec.structs.asdict(t.seat))
            for t in opened.tickets
            if t.seat is not None
        ],
        counts=counts,
        expires_at=expires_at,
    )
