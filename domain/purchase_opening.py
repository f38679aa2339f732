"""Opening a purchase at the sales desk: its holds (an event's seats or an attraction's places),
its discount use, its price and its tickets, decided together in one append, so a purchase never
exists without what it bought held for it. A free purchase is paid at once."""

from __future__ import annotations

from dataclasses import dataclass

from domain import catalog, discounts, purchasing, streams, tickets
from domain.errors import DomainError, NotFound
from domain.events import Event
from domain.inventory import attraction_days, holds
from domain.inventory.events import SeatRef
from domain.pricing import price_basket, ticket_shares
from domain.purchase_settling import paid_with_tickets
from domain.purchasing import (
    PaymentIntentCreated,
    PurchasedTicket,
    PurchaseOpened,
    PurchaseRequest,
    PurchaseState,
)
from domain.sale_commands import (
    Companions,
    Decision,
    Draft,
    OpenAttractionPurchase,
    OpenEventPurchase,
    OpenPurchase,
)


class PaymentProcessingUnavailable(DomainError):
    code = "payment_processing_unavailable"


@dataclass(frozen=True)
class Product:
    """What is being bought, as the purchase and its tickets record it."""

    event_id: int | None
    attraction_id: int | None
    slug: str
    name: str
    schedule: tickets.Schedule


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
    command: OpenAttractionPurchase,
    inventory: attraction_days.AttractionInventory,
    companions: Companions,
) -> Decision:
    req, org, draft = command.request, command.organization, command.draft
    opened = inventory.opened
    if opened is None or opened.organization_id != org.organization_id:
        raise NotFound("attraction not found", "attraction_slug")
    types = {t.id: t for t in opened.ticket_types}
    purchasing.check_ticket_types(req, {t.id: (t.name, t.max_per_purchase) for t in types.values()})
    held = attraction_days.hold_attraction_tickets(
        inventory,
        token=draft.token,
        quantities=_quantities(req),
        visit_date=req.visit_date,
        today=attraction_days.local_date(draft.now, org.timezone),
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


def _quantities(req: PurchaseRequest) -> dict[int, int]:
    return {tid: n for tid, n in req.quantities.items() if n > 0}


def _tickets(
    req: PurchaseRequest,
    draft: Draft,
    types: dict[int, catalog.TicketType],
    prices: dict[int, int],
    seats: dict[int, list[SeatRef]],
    shares: list[tuple[int, int]],
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
                    discount_cents=shares[i][0],
                    fee_cents=shares[i][1],
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
    bought = [(tid, prices[tid]) for tid in sorted(quantities) for _ in range(quantities[tid])]
    shares = ticket_shares(bought, pricing, org.fee, discount)
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
        tickets=_tickets(req, draft, types, prices, seats, shares),
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
