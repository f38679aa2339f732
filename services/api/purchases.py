"""Purchase endpoints: create (with Idempotency-Key), poll and cancel. A purchase is read from
its own stream, so a token that POST /purchases returned is found at once."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from domain import catalog, tickets
from domain.errors import DomainError
from domain.inventory.events import SeatRef
from domain.inventory.holds import InsufficientAvailability, SeatsTaken
from domain.purchasing import PurchasedTicket, PurchaseRequest, PurchaseState
from domain.seating import seat_key
from domain.tickets import TicketState
from infra.idempotency import Claim
from services.api import idempotent
from services.api.context import OFFERS, PURCHASES, api_key_of, metadata_of, now
from services.api.errors import from_domain
from services.api.etickets import eticket_url
from services.api.http import decode_body, json_response
from services.api.routes import Route
from services.api.schemas import Payload
from services.usecases.ticket_resource import as_bought, ticket_facts
from services.usecases.ticketing import load_tickets


class Consumer(Payload):
    name: str | None
    email: str | None


class TicketView(Payload):
    """The spec's ticket line, with the ticket resource's fields where they apply."""

    id: int
    ticket_code: str
    ticket_status: str
    ticket_type_id: int
    ticket_type_name: str
    name: str | None
    email: str | None
    amount_cents: int
    service_fee_cents: int
    currency: str
    seat: SeatRef | None
    consumer: Consumer
    is_scanned: bool
    scan_count: int
    scannable_until: datetime | None
    needs_personalization: bool
    personalization_start: datetime | None
    personalization_end: datetime | None
    eticket_url: Annotated[
        str | None,
        Meta(description="The e-ticket link the holder opens without a key (`shop:eticket`)"),
    ]


class ProductRef(Payload):
    id: int
    slug: str
    name: str


class PurchaseView(Payload):
    token: str
    status: str
    paid_at: datetime | None
    expires_at: datetime
    stripe_status: str | None
    amount_cents: int
    currency: str
    subtotal_cents: int
    discount_cents: int
    fee_cents: int
    total_cents: int
    access_code: str
    event: ProductRef | None
    attraction: ProductRef | None
    visit_date: date | None
    tickets: list[TicketView]
    # Given back of the payment so far (GET /purchases/:token/refunds lists the refunds), and
    # whether the buyer's bank disputes it (GET /disputes).
    refunded_cents: int
    disputed: bool


class PaymentView(Payload):
    stripe_publishable_key: str | None
    stripe_connected_account_id: str | None
    stripe_client_secret: str | None
    stripe_payment_intent_id: str | None


class PurchaseCreated(Payload):
    purchase: PurchaseView
    payment: PaymentView


class PurchaseResponse(Payload):
    purchase: PurchaseView


class CancelResponse(Payload):
    cancelled: bool
    token: str


SEAT_REFUSALS = (SeatsTaken.code, InsufficientAvailability.code)


def _ticket(
    request: web.Request,
    state: PurchaseState,
    bought: PurchasedTicket,
    issued: TicketState | None,
    fee: int,
) -> TicketView:
    o = state.opened
    facts = as_bought(ticket_facts(state, bought, issued), bought)
    return TicketView(
        id=bought.id,
        ticket_code=facts.code,
        ticket_status=facts.status,
        ticket_type_id=bought.ticket_type_id,
        ticket_type_name=bought.ticket_type_name,
        name=facts.name,
        email=facts.email,
        amount_cents=bought.amount_cents,
        service_fee_cents=fee,
        currency=o.pricing.currency,
        seat=bought.seat,
        consumer=Consumer(name=facts.name, email=facts.email),
        is_scanned=bool(facts.scan_count),
        scan_count=facts.scan_count,
        scannable_until=facts.scannable_until,
        needs_personalization=facts.needs_personalization,
        personalization_start=facts.personalization_start,
        personalization_end=facts.personalization_end,
        eticket_url=_eticket(request, issued) if facts.status != "transferred" else None,
    )


def _eticket(request: web.Request, issued: TicketState | None) -> str | None:
    """The ticket resource's `shop:eticket`, which the holder opens without the partner's key:
    not before fulfillment starts, once refunded or past `scannable_until` (it gave the
    partner's PDF path, which a buyer it was passed on to was refused)."""
    moment = now()
    if issued is None or not tickets.handed_out(issued, moment):
        return None
    return eticket_url(request, issued, moment)


def purchase_view(
    request: web.Request, state: PurchaseState, issued: dict[int, TicketState] | None = None
) -> PurchaseView:
    """`issued`: the tickets' own states once paid (holder edits, scans)."""
    o = state.opened
    product = ProductRef(
        id=o.event_id or o.attraction_id or 0, slug=o.product_slug, name=o.product_name
    )
    currency = o.pricing.currency
    return PurchaseView(
        token=o.token,
        status=state.status,
        paid_at=state.paid_at,
        expires_at=o.expires_at,
        stripe_status=state.stripe_status,
        amount_cents=o.pricing.total_cents,
        currency=currency,
        subtotal_cents=o.pricing.subtotal_cents,
        discount_cents=o.pricing.discount_cents,
        fee_cents=o.pricing.fee_cents,
        total_cents=o.pricing.total_cents,
        access_code=o.access_code,
        event=product if o.event_id is not None else None,
        attraction=product if o.attraction_id is not None else None,
        visit_date=o.visit_date,
        tickets=[
            _ticket(request, state, t, (issued or {}).get(t.id), fee)
            for t, fee in zip(o.tickets, tickets.fee_shares(o), strict=True)
        ],
        refunded_cents=state.refunded_cents,
        disputed=bool(state.disputes),
    )


async def _create(request: web.Request, raw: bytes, claim: Claim | None) -> web.Response:
    """Under an Idempotency-Key the purchase's token is the key's (`Claim.reserved`): a retry
    of a request whose gateway died before answering finds the purchase it stored."""
    req = decode_body(raw, PurchaseRequest)
    key = api_key_of(request)
    purchases = request.app[PURCHASES]
    try:
        state = await purchases.place(req, key.organization_id, key.id, metadata_of(request), claim)
    except DomainError as exc:
        refused = from_domain(exc)
        if refused.code in SEAT_REFUSALS:
            await _withdraw_offers(request, req, key.organization_id)
        return refused.response()
    # Only the client secret is null for a purchase with nothing to pay, as the spec has it:
    # a shop's Stripe.js setup reads the key whatever the basket.
    payment = PaymentView(
        stripe_publishable_key=purchases.publishable_key,
        stripe_connected_account_id=state.opened.stripe_account_id,
        stripe_client_secret=state.client_secret,
        stripe_payment_intent_id=state.intent_id,
    )
    issued = None
    if state.status == "paid":
        # Nothing to pay: its tickets were issued with it, and show as the next GET shows them.
        loaded = await load_tickets(purchases.pool, [t.id for t in state.opened.tickets])
        issued = {ticket_id: s for ticket_id, (s, _) in loaded.items() if s is not None}
    view = purchase_view(request, state, issued)
    return json_response(PurchaseCreated(purchase=view, payment=payment), 201)


async def _withdraw_offers(request: web.Request, req: PurchaseRequest, organization: int) -> None:
    """A buyer refused the seats auto-select offered will ask again: those seats are kept for
    nobody any more (the taken ones show as taken soon, the others go to the next buyer)."""
    if req.event_slug is None or not req.selected_seats:
        return
    claim = catalog.claim_stream("event", req.event_slug, organization)
    event_id = await request.app[PURCHASES].catalog.owner(claim)
    if event_id is not None:
        seats = (seat_key(s) for chosen in req.selected_seats.values() for s in chosen)
        await request.app[OFFERS].withdraw(event_id, seats)


async def create_purchase(request: web.Request) -> web.Response:
    raw = await request.read()
    return await idempotent.once(request, raw, lambda claim: _create(request, raw, claim))


async def get_purchase(request: web.Request) -> web.Response:
    """Polled by buyers' pages until paid (services/usecases/ticketing.py's Polls)."""
    state, issued = await request.app[PURCHASES].polls.purchase(
        request.match_info["token"], api_key_of(request).organization_id
    )
    return json_response(PurchaseResponse(purchase=purchase_view(request, state, issued)))


async def cancel_purchase(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    await request.app[PURCHASES].endings.cancel(
        token, api_key_of(request).organization_id, metadata_of(request)
    )
    return json_response(CancelResponse(cancelled=True, token=token))


ROUTES = [
    Route(
        "POST",
        "/api/v1/purchases",
        create_purchase,
        "Create a purchase",
        "Purchases",
        PurchaseCreated,
        status=201,
        body=PurchaseRequest,
        # 404: the event or attraction is unknown, a draft or another organization's.
        errors=(401, 404, 409, 422, 429, 502, 503),
        lane="selling",
        idempotent=True,
    ),
    Route(
        "GET",
        "/api/v1/purchases/{token}",
        get_purchase,
        "Poll a purchase",
        "Purchases",
        PurchaseResponse,
        errors=(401, 404, 429),
        path_params={"token": str},
    ),
    Route(
        "POST",
        "/api/v1/purchases/{token}/cancel",
        cancel_purchase,
        "Cancel an unpaid purchase",
        "Purchases",
        CancelResponse,
        errors=(401, 404, 409, 429),
        path_params={"token": str},
    ),
]
