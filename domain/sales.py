"""The sales desk's commands, as data, and the pure functions that decide them.

A sale touches several aggregates at once: the inventory it holds from (an event's seats or an
attraction's days), the discount code it redeems, the purchase it opens and, for a free or paid
purchase, the tickets it issues. Each command here is decided on the inventory's state and the
discount codes it names (`companions`, by stream), and returns its events per stream in one
`Decision`: the sales desk (services/usecases/desk.py) only queues, batches, appends and
retries. Randomness and ids are drawn before the decision (`Draft`); so is the clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from domain import catalog, discounts, purchasing, refunds, streams, tickets, venues
from domain.errors import DomainError, NotFound
from domain.events import Event
from domain.inventory import holds
from domain.inventory.events import AttractionTicketsHeld, HeldSeat, SeatRef, SeatsHeld
from domain.pricing import price_basket
from domain.purchasing import (
    PaymentIntentCreated,
    PurchasedTicket,
    PurchaseOpened,
    PurchaseRequest,
    PurchaseState,
)
from domain.seating import SeatKey, selected_keys

# What a command sees of the streams beside the inventory's: their states, by stream id.
Companions = Mapping[str, Any]
Inventory = holds.EventInventory | holds.AttractionInventory


class PaymentProcessingUnavailable(DomainError):
    code = "payment_processing_unavailable"


class SettledMeanwhile(DomainError):
    """Another delivery of a late payment held the seats again first: this one must read the
    purchase again (it will find the payment applied)."""

    code = "settled_meanwhile"


@dataclass
class Decision:
    """What one command decided: events per stream, the versions it expects of streams the desk
    does not keep (a purchase, a new ticket), and the result its caller gets."""

    events: dict[str, list[Event]]
    result: Any = None
    expected: dict[str, int] = field(default_factory=dict)


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """What is drawn before the decision: randomness, ids and the clock are IO to the domain."""

    token: str
    ticket_ids: list[int]
    codes: list[str]
    attendee_tokens: list[str]
    access_code: str
    now: datetime
    expires_at: datetime
    api_key_id: int | None
    discount_id: int | None


class PrepaidIntent(msgspec.Struct, frozen=True, kw_only=True):
    """A PaymentIntent created for a purchase's forecast, before its decision: recorded in the
    purchase it opens, for exactly the amount it was created for."""

    intent_id: str
    client_secret: str | None
    amount_cents: int


class OpenEventPurchase(msgspec.Struct, frozen=True, kw_only=True):
    request: PurchaseRequest
    organization: catalog.OrganizationRegistered
    draft: Draft
    sections: list[venues.Section]
    intent: PrepaidIntent | None = None


class OpenAttractionPurchase(msgspec.Struct, frozen=True, kw_only=True):
    request: PurchaseRequest
    organization: catalog.OrganizationRegistered
    draft: Draft
    intent: PrepaidIntent | None = None


class ReleaseHolds(msgspec.Struct, frozen=True, kw_only=True):
    """End an unpaid purchase (`ending`: its cancellation or expiry) and give its holds and
    discount use back, expecting the purchase at the version `ending` was decided on."""

    opened: PurchaseOpened
    reason: str
    ending: list[Event]
    purchase_version: int


class HoldAgain(msgspec.Struct, frozen=True, kw_only=True):
    """A payment arrived for a purchase that had let go of its seats: hold the same seats again
    and pay the purchase with its tickets, if the seats are still free."""

    state: PurchaseState
    purchase_version: int
    intent_id: str
    now: datetime
    schedule: tickets.Schedule
    sections: list[venues.Section]  # the event's (its standing places); none for attractions


class RefundTickets(msgspec.Struct, frozen=True, kw_only=True):
    """A refund decided on the purchase and its tickets (domain/refunds.py): their seats or
    places go back to the inventory, and the discount use once no ticket is left, in the same
    append, which expects each of the refund's other streams at the version it was decided
    on (a scan or another refund meanwhile fails it)."""

    opened: PurchaseOpened
    refund: refunds.Refund
    expected: dict[str, int]


OpenPurchase = OpenEventPurchase | OpenAttractionPurchase
SaleCommand = OpenEventPurchase | OpenAttractionPurchase | ReleaseHolds | HoldAgain | RefundTickets


def decide(command: SaleCommand, inventory: Any, companions: Companions) -> Decision:
    """The one entry the sales desk calls: every sale's decision starts here."""
    match command:
        case OpenEventPurchase():
            return open_event_purchase(command, inventory, companions)
        case OpenAttractionPurchase():
            return open_attraction_purchase(command, inventory, companions)
        case ReleaseHolds():
            return release_holds(command, inventory, companions)
        case HoldAgain():
            return hold_again(command, inventory, companions)
        case RefundTickets():
            return refund_tickets(command, inventory, companions)
    raise TypeError(f"not a sale command: {command!r}")


def seats_chosen(command: SaleCommand) -> frozenset[SeatKey]:
    """The seats a purchase's buyer chose (`selected_seats`): no other seat will do for them,
    so two purchases choosing one of them cannot both go through. Seats left to the desk are
    not claimed: it picks free ones when it decides."""
    if not isinstance(command, OpenEventPurchase) or not command.request.selected_seats:
        return frozenset()
    return frozenset(selected_keys(command.request.selected_seats))


def discount_streams(command: SaleCommand) -> tuple[str, ...]:
    """The discount code streams a command decides on, besides the inventory."""
    match command:
        case OpenEventPurchase() | OpenAttractionPurchase():
            discount_id = command.draft.discount_id
        case ReleaseHolds():
            discount_id = command.opened.discount_id
        case HoldAgain():
            discount_id = command.state.opened.discount_id
        case RefundTickets() if command.refund.whole:
            discount_id = command.opened.discount_id
        case _:
            discount_id = None
    return (streams.discount(discount_id),) if discount_id is not None else ()


def with_intent(command: OpenPurchase, intent: PrepaidIntent) -> OpenPurchase:
    return msgspec.structs.replace(command, intent=intent)


def open_event_purchase(
    command: OpenEventPurchase, inventory: holds.EventInventory, companions: Companions
) -> Decision:
    req, org, draft = command.request, command.organization, command.draft
    scheduled = holds.check_on_sale(inventory.listing, draft.now)
    if scheduled.organization_id != org.organization_id:
        raise NotFound("event not found", "event_slug")
    types = inventory.ticket_types
    purchasing.check_ticket_types(req, {t.id: (t.name, t.max_per_purchase) for t in types.values()})
    held = holds.hold_seats(
        inventory,
        command.sections,
        token=draft.token,
        quantities=_quantities(req),
        selected=dict(req.selected_seats or {}),
        now=draft.now,
        expires_at=draft.expires_at,
    )
    seats: dict[int, list[SeatRef]] = {}
    for seat in held.seats:
        seats.setdefault(seat.ticket_type_id, []).append(
            SeatRef(section_id=seat.section_id, row=seat.row, seat_number=seat.seat_number)
        )
    product = Product(
        event_id=scheduled.event_id,
        attraction_id=None,
        slug=scheduled.slug,
        name=scheduled.name,
        schedule=tickets.event_schedule(scheduled),
    )
    hold = (streams.event(scheduled.event_id), [held])
    return _open(command, companions, types, hold, product, seats)


def open_attraction_purchase(
    command: OpenAttractionPurchase, inventory: holds.AttractionInventory, companions: Companions
) -> Decision:
    req, org, draft = command.request, command.organization, command.draft
    opened = inventory.opened
    if opened is None or opened.organization_id != org.organization_id:
        raise NotFound("attraction not found", "attraction_slug")
    types = {t.id: t for t in opened.ticket_types}
    purchasing.check_ticket_types(req, {t.id: (t.name, t.max_per_purchase) for t in types.values()})
    held = holds.hold_attraction_tickets(
        inventory,
        token=draft.token,
        quantities=_quantities(req),
        visit_date=req.visit_date,
        today=holds.local_date(draft.now, org.timezone),
        expires_at=draft.expires_at,
    )
    product = Product(
        event_id=None,
        attraction_id=opened.attraction_id,
        slug=opened.slug,
        name=opened.name,
        schedule=tickets.visit_schedule(req.visit_date, org.timezone),
    )
    hold = (streams.attraction(opened.attraction_id), [held])
    return _open(command, companions, types, hold, product, {})


def release_holds(command: ReleaseHolds, inventory: Inventory, companions: Companions) -> Decision:
    opened, token = command.opened, command.opened.token
    if opened.event_id is not None:
        inventory_stream = streams.event(opened.event_id)
        released = holds.release_seats(inventory, token, command.reason)
    else:
        assert opened.attraction_id is not None
        inventory_stream = streams.attraction(opened.attraction_id)
        released = holds.release_attraction_tickets(inventory, token, command.reason)
    purchase = streams.purchase(token)
    events: dict[str, list[Event]] = {inventory_stream: released, purchase: command.ending}
    if opened.discount_id is not None:
        code = companions.get(streams.discount(opened.discount_id))
        if code is not None:
            events[streams.discount(opened.discount_id)] = discounts.release(code, token)
    return Decision(events, expected={purchase: command.purchase_version})


def refund_tickets(
    command: RefundTickets, inventory: Inventory, companions: Companions
) -> Decision:
    opened, refund = command.opened, command.refund
    counts = dict(Counter(t.ticket_type_id for t in refund.returned))
    back: list[Event]
    if opened.event_id is not None:
        assert isinstance(inventory, holds.EventInventory)
        inventory_stream = streams.event(opened.event_id)
        seats = [
            HeldSeat(ticket_type_id=t.ticket_type_id, **msgspec.structs.asdict(t.seat))
            for t in refund.returned
            if t.seat is not None
        ]
        back = holds.return_seats(inventory, opened.token, seats, counts, "refunded")
    else:
        assert isinstance(inventory, holds.AttractionInventory)
        assert opened.attraction_id is not None
        inventory_stream = streams.attraction(opened.attraction_id)
        back = holds.return_attraction_tickets(inventory, opened.token, counts, "refunded")
    events: dict[str, list[Event]] = {inventory_stream: back, **refund.events}
    if refund.whole and opened.discount_id is not None:
        code = companions.get(streams.discount(opened.discount_id))
        if code is not None:
            events[streams.discount(opened.discount_id)] = discounts.release(code, opened.token)
    return Decision(events, result=refund, expected=command.expected)


def hold_again(command: HoldAgain, inventory: Inventory, companions: Companions) -> Decision:
    """The seats (or places) again, and the discount use the purchase gave back with them: a
    code at its limit by now refuses, as taken seats do, and the payment is given back."""
    state, now = command.state, command.now
    opened = state.opened
    purchase = streams.purchase(opened.token)
    if opened.token in inventory.holds:
        # Another delivery of this payment has held the seats again, in this batch or in one
        # this delivery's read of the purchase did not see.
        raise SettledMeanwhile("the late payment was settled meanwhile")
    before = previous_hold(opened, now)
    if isinstance(before, SeatsHeld):
        assert isinstance(inventory, holds.EventInventory)
        held: Event = holds.rehold_seats(inventory, command.sections, before, now)
        inventory_stream = streams.event(before.event_id)
    else:
        assert isinstance(inventory, holds.AttractionInventory)
        held = holds.rehold_attraction_tickets(inventory, before)
        inventory_stream = streams.attraction(before.attraction_id)
    events: dict[str, list[Event]] = {inventory_stream: [held]}
    if opened.discount_id is not None:
        code = companions.get(streams.discount(opened.discount_id))
        if code is not None:
            events[streams.discount(opened.discount_id)] = discounts.redeem_again(
                code, opened.token
            )
    paid = paid_with_tickets(state, command.intent_id, now, command.schedule, late=True)
    expected = dict.fromkeys(paid, streams.NEW) | {purchase: command.purchase_version}
    return Decision(events | paid, expected=expected)


@dataclass(frozen=True)
class Product:
    """What is being bought, as the purchase and its tickets record it."""

    event_id: int | None
    attraction_id: int | None
    slug: str
    name: str
    schedule: tickets.Schedule


def paid_with_tickets(
    state: PurchaseState,
    intent_id: str | None,
    now: datetime,
    schedule: tickets.Schedule,
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
        opened, now, schedule, named={t.id for t in opened.tickets if t.named}
    )
    return {streams.purchase(opened.token): paid, **issued}


def previous_hold(
    opened: PurchaseOpened, expires_at: datetime
) -> SeatsHeld | AttractionTicketsHeld:
    """The hold a purchase had, rebuilt from what it bought (to hold again after a late
    payment)."""
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


def _quantities(req: PurchaseRequest) -> dict[int, int]:
    return {tid: n for tid, n in req.quantities.items() if n > 0}


def _tickets(
    req: PurchaseRequest,
    draft: Draft,
    types: dict[int, catalog.TicketType],
    prices: dict[int, int],
    seats: dict[int, list[SeatRef]],
) -> list[PurchasedTicket]:
    attendees = {(a.ticket_type_id, a.index): a for a in req.attendees}
    made = []
    i = 0
    for tid in sorted(req.quantities):
        for index in range(1, req.quantities[tid] + 1):
            attendee = attendees.get((tid, index))
            seat_list = seats.get(tid, [])
            made.append(
                PurchasedTicket(
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
    command: OpenPurchase,
    companions: Companions,
    types: dict[int, catalog.TicketType],
    hold: tuple[str, list[Event]],
    product: Product,
    seats: dict[int, list[SeatRef]],
) -> Decision:
    """The parts every purchase shares once its holds are decided: the discount use, the
    price, the payment precondition and the opened purchase (paid at once when free)."""
    req, org, draft = command.request, command.organization, command.draft
    quantities = _quantities(req)
    events: dict[str, list[Event]] = {hold[0]: hold[1]}
    discount = None
    if draft.discount_id is not None:
        code = companions.get(streams.discount(draft.discount_id))
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
    expected = {stream: streams.NEW}
    if pricing.total_cents == 0:
        issued = paid_with_tickets(PurchaseState(opened=opened), None, draft.now, product.schedule)
        events[stream] += issued.pop(stream)
        events |= issued
        expected |= dict.fromkeys(issued, streams.NEW)
    elif command.intent is not None:
        # The price comes from the draft (its clock) and the event's ticket types, which no
        # sale changes: the forecast's amount is the purchase's.
        assert pricing.total_cents == command.intent.amount_cents, "the price moved"
        events[stream].append(
            PaymentIntentCreated(
                token=draft.token,
                intent_id=command.intent.intent_id,
                client_secret=command.intent.client_secret,
            )
        )
    return Decision(events, result=events[stream], expected=expected)
