"""Ticket endpoints: verify and scan for gate apps, and buyer self-service (lookup by access
code and purchase e-mail, bulk attendee edits, the per-seat attendee view)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from domain.inventory.events import SeatRef
from domain.personalization import check_attendee_edit
from domain.purchasing import PurchaseOpened, PurchaseState
from domain.tickets import Reason, visit_day_start
from domain.venues import VenueRegistered
from services.api import idempotent
from services.api.context import PURCHASES, api_key_of, metadata_of, pool_of
from services.api.errors import ApiError
from services.api.http import json_response, parse_body, parse_query
from services.api.routes import Route
from services.api.schemas import Payload, Query
from services.api.ticket_resource import ConsumerEdit, consumer_changes
from services.usecases import ticketing
from services.usecases.ticket_resource import as_bought, ticket_facts


class TicketSummary(Payload):
    id: int
    code: str
    status: str
    ticket_type: str
    event_slug: str | None
    attraction_slug: str | None
    holder_name: str | None
    section_id: int | None
    seat_row: str | None
    seat_number: int | None
    scan_count: int
    is_scanned: bool
    scannable_until: datetime | None


class TicketVerdict(Payload):
    valid: bool
    reason: Reason
    ticket: TicketSummary


def _summary(verdict: ticketing.Verdict) -> TicketSummary:
    """From the issued ticket; before issue, from the purchase it belongs to. A code a
    transfer replaced describes that code, resold: not the new holder nor their scans."""
    state = verdict.ticket
    if state is not None:
        issued = state.issued
        resold = verdict.reason == "resold"
        return _described(
            issued.ticket_id,
            verdict.code,
            "resold" if resold else state.status,
            issued.ticket_type_name,
            (issued.product_slug, issued.event_id is not None),
            None if resold else state.holder_name,
            issued.seat,
            0 if resold else state.scan_count,
            issued.scannable_until,
        )
    assert verdict.purchase is not None
    opened = verdict.purchase.opened
    bought = next(t for t in opened.tickets if t.id == verdict.ticket_id)
    product = (opened.product_slug, opened.event_id is not None)
    return _described(
        bought.id,
        bought.code,
        verdict.reason,
        bought.ticket_type_name,
        product,
        bought.name,
        bought.seat,
        0,
        None,
    )


def _described(
    ticket_id: int,
    code: str,
    status: str,
    ticket_type: str,
    product: tuple[str, bool],
    holder_name: str | None,
    seat: SeatRef | None,
    scan_count: int,
    scannable_until: datetime | None,
) -> TicketSummary:
    slug, is_event = product
    return TicketSummary(
        id=ticket_id,
        code=code,
        status=status,
        ticket_type=ticket_type,
        event_slug=slug if is_event else None,
        attraction_slug=None if is_event else slug,
        holder_name=holder_name,
        section_id=seat.section_id if seat else None,
        seat_row=seat.row if seat else None,
        seat_number=seat.seat_number if seat else None,
        scan_count=scan_count,
        is_scanned=bool(scan_count),
        scannable_until=scannable_until,
    )


def _verdict(verdict: ticketing.Verdict) -> web.Response:
    return json_response(
        TicketVerdict(valid=verdict.valid, reason=verdict.reason, ticket=_summary(verdict))
    )


async def verify_ticket(request: web.Request) -> web.Response:
    gate = request.app[PURCHASES].gate
    code = request.match_info["code"]
    return _verdict(await gate.verify(code, api_key_of(request).organization_id))


async def scan_ticket(request: web.Request) -> web.Response:
    """With an Idempotency-Key, a gate whose answer was lost (its connection dropped) gets the
    first verdict again, `ok`, rather than `already_scanned` for its own scan."""
    return await idempotent.once(request, await request.read(), lambda _: _scan(request))


async def _scan(request: web.Request) -> web.Response:
    gate = request.app[PURCHASES].gate
    verdict = await gate.scan(
        request.match_info["code"], api_key_of(request).organization_id, metadata_of(request)
    )
    return _verdict(verdict)


# ---- buyer self-service --------------------------------------------------------------------


class BuyerQuery(Query):
    email: Annotated[str, Meta(min_length=3, max_length=254)]


class AttendeeSeat(Payload):
    token: str
    name: str | None
    email: str | None
    seat: SeatRef | None
    ticket_code: str
    status: str
    needs_personalization: bool
    personalization_start: datetime | None
    personalization_end: datetime | None
    scannable_until: datetime | None


class LineProduct(Payload):
    id: Annotated[
        str, Meta(description="The event's or attraction's id (a string, as every id here)")
    ]
    name: str
    slug: str
    image: str | None


def _product(opened: PurchaseOpened) -> LineProduct:
    product_id = opened.event_id if opened.event_id is not None else opened.attraction_id
    return LineProduct(
        id=str(product_id), name=opened.product_name, slug=opened.product_slug, image=None
    )


class LineEvent(Payload):
    startsAt: datetime | None
    location: str | None
    guestLabel: str
    guest: str | None


class OrderLine(Payload):
    lineItemId: str
    product: LineProduct
    ticketType: str
    event: LineEvent
    seats: list[AttendeeSeat]


class OrderSummary(Payload):
    id: str
    lookup: int
    createdAt: datetime
    status: str
    currency: str
    totalGross: int


class TicketBundle(Payload):
    code: str
    order: OrderSummary
    buyerEmail: str
    lines: list[OrderLine]


class SeatEdit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    token: Annotated[str, Meta(min_length=16, max_length=80)]
    name: Annotated[str, Meta(max_length=200)]
    email: str | None
    consumer: Annotated[
        ConsumerEdit | None,
        Meta(description="The consumer's other details, as PUT /tickets/uid/{uid}/consumer"),
    ] = None


class AttendeeEdits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[str, Meta(min_length=3, max_length=254)]
    seats: Annotated[list[SeatEdit], Meta(min_length=1, max_length=200)]


class AttendeeView(Payload):
    token: str
    attendee: dict[str, str | None]
    product: LineProduct
    event: LineEvent
    seat: SeatRef | None
    orderStatus: str
    status: Annotated[
        str,
        Meta(
            description="This seat's ticket: `valid`, `scanned` or `refunded` once issued;"
            " before, `pending_payment`, or `cancelled` once its order is cancelled or expired"
        ),
    ]


async def _event_of(request: web.Request, opened: PurchaseOpened) -> LineEvent:
    """When and where, from the catalog (which never changes an event's date or venue): the
    same answer before payment, after it and after a cancellation. An attraction visit starts
    with its day in the organization's zone (none without a visit date)."""
    known = request.app[PURCHASES].catalog
    starts_at: datetime | None = None
    if opened.event_id is not None:
        scheduled = await known.scheduled(opened.event_id)
        starts_at, venue_id = scheduled.event_date, scheduled.venue_id
    else:
        assert opened.attraction_id is not None
        venue_id = (await known.attraction(opened.attraction_id)).venue_id
        if opened.visit_date is not None:
            zone = (await known.organization(opened.organization_id)).timezone
            starts_at = visit_day_start(opened.visit_date, zone)
    return LineEvent(
        startsAt=starts_at,
        location=_location(await known.venue(venue_id)),
        guestLabel="Attendee",
        guest=None,
    )


def _location(venue: VenueRegistered) -> str:
    """`Det Ny Teater, Gothersgade 8, 1123 København`: the parts the venue has."""
    town = " ".join(part for part in (venue.zip_code, venue.city) if part)
    return ", ".join(part for part in (venue.name, venue.address, town) if part)


def order_status(purchase: PurchaseState) -> str:
    """The purchase's status, or `refunded` once its late payment is being given back or every
    ticket of it was refunded (no longer active: its attendees cannot be edited)."""
    everything = {t.id for t in purchase.opened.tickets} <= purchase.refunded_tickets
    if purchase.refunded or (purchase.status == "paid" and everything):
        return "refunded"
    return purchase.status


def order_lookup(opened: PurchaseOpened) -> int:
    """The order's number for people (the spec's `lookup`): its first ticket's id, unique
    across all orders and fixed when the purchase is opened."""
    return min(t.id for t in opened.tickets)


def _bundle(order: ticketing.Order, event: LineEvent) -> TicketBundle:
    purchase = order.purchase
    opened = purchase.opened
    status = order_status(purchase)
    states = {s.issued.ticket_id: s for s in order.tickets}
    lines: dict[int, OrderLine] = {}
    for bought in opened.tickets:
        facts = as_bought(ticket_facts(purchase, bought, states.get(bought.id)), bought)
        line = lines.get(bought.ticket_type_id)
        if line is None:
            line = lines[bought.ticket_type_id] = OrderLine(
                lineItemId=f"{opened.token}:{bought.ticket_type_id}",
                product=_product(opened),
                ticketType=bought.ticket_type_name,
                event=event,
                seats=[],
            )
        line.seats.append(
            AttendeeSeat(
                token=bought.attendee_token,
                **facts.attendee,
                seat=bought.seat,
                ticket_code=facts.code,
                status=facts.status,
                needs_personalization=facts.needs_personalization,
                personalization_start=facts.personalization_start,
                personalization_end=facts.personalization_end,
                scannable_until=facts.scannable_until,
            )
        )
    return TicketBundle(
        code=opened.access_code,
        order=OrderSummary(
            id=opened.token,
            lookup=order_lookup(opened),
            createdAt=opened.opened_at,
            status=status,
            currency=opened.pricing.currency,
            totalGross=opened.pricing.total_cents,
        ),
        buyerEmail=opened.buyer.email,
        lines=list(lines.values()),
    )


async def buyer_tickets(request: web.Request) -> web.Response:
    query = parse_query(request, BuyerQuery)
    order = await ticketing.order_by_access_code(
        pool_of(request),
        request.match_info["code"],
        query.email,
        api_key_of(request).organization_id,
    )
    return json_response(_bundle(order, await _event_of(request, order.purchase.opened)))


async def edit_attendees(request: web.Request) -> web.Response:
    edits = await parse_body(request, AttendeeEdits)
    pool = pool_of(request)
    organization_id = api_key_of(request).organization_id
    order = await ticketing.order_by_access_code(
        pool, request.match_info["code"], edits.email, organization_id
    )
    status = order_status(order.purchase)
    if status == "pending_payment":
        raise ApiError(409, "not_yet_paid", "attendees can be edited once the order is paid")
    if status != "paid":
        raise ApiError(409, "order_inactive", f"the order is {status}")
    seats = [
        (
            s.token,
            s.name,
            s.email,
            consumer_changes(s.consumer, f"seats[{i}].consumer.") if s.consumer else {},
        )
        for i, s in enumerate(edits.seats)
    ]
    now = datetime.now(UTC)
    for i, (_, name, email, details) in enumerate(seats):
        check_attendee_edit(name, email, now, f"seats[{i}]", details)
    await ticketing.update_attendees(pool, order, seats, metadata_of(request))
    updated = await ticketing.order_by_access_code(
        pool, request.match_info["code"], edits.email, organization_id
    )
    return json_response(_bundle(updated, await _event_of(request, updated.purchase.opened)))


async def attendee_ticket(request: web.Request) -> web.Response:
    """The seat whatever its order's state (`orderStatus` says it): a buyer may hand the
    attendee link on before paying, or after cancelling."""
    token = request.match_info["token"]
    bought, issued, purchase = await ticketing.ticket_by_attendee_token(
        pool_of(request), token, api_key_of(request).organization_id
    )
    facts = ticket_facts(purchase, bought, issued)
    opened = purchase.opened
    return json_response(
        AttendeeView(
            token=token,
            attendee=facts.attendee,
            product=_product(opened),
            event=await _event_of(request, opened),
            seat=bought.seat,
            orderStatus=order_status(purchase),
            status=facts.status,
        )
    )


ROUTES = [
    Route(
        "GET",
        "/api/v1/tickets/{code}/verify",
        verify_ticket,
        "Verify a ticket (read-only)",
        "Tickets",
        TicketVerdict,
        errors=(401, 404, 429),
        path_params={"code": str},
    ),
    Route(
        "POST",
        "/api/v1/tickets/{code}/scan",
        scan_ticket,
        "Scan a ticket at the gate",
        "Tickets",
        TicketVerdict,
        errors=(401, 404, 429),
        path_params={"code": str},
        idempotent=True,
    ),
    Route(
        "GET",
        "/api/v1/tickets/attendee/{token}",
        attendee_ticket,
        "The attendee view of one seat",
        "Buyer self-service",
        AttendeeView,
        errors=(401, 404, 429),
        path_params={"token": str},
    ),
    Route(
        "GET",
        "/api/v1/tickets/{code}",
        buyer_tickets,
        "Buyer lookup by access code and purchase e-mail",
        "Buyer self-service",
        TicketBundle,
        query=BuyerQuery,
        errors=(401, 404, 422, 429),
        path_params={"code": str},
    ),
    Route(
        "PATCH",
        "/api/v1/tickets/{code}",
        edit_attendees,
        "Edit attendees (1-200 seats)",
        "Buyer self-service",
        TicketBundle,
        body=AttendeeEdits,
        errors=(401, 404, 409, 422, 429),
        path_params={"code": str},
    ),
]
