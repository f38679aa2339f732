"""The e-ticket link: `/eticket/<token>` answers the ticket's PDF to whoever opens it, with no
API key (the ticket resource hands it to the partner, who hands it to the holder). The token
is signed for the ticket's current code (infra/signed_links.py): after a transfer it answers
410, as it does for a refunded ticket and after the ticket's last scannable moment. Before the
event's fulfillment starts there is no link, and a link made anyway answers 409."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from domain import tickets
from domain.tickets import TicketState
from infra.signed_links import LinkClaims, LinkRefused
from services.api.context import DOCUMENTS, HANDOUT, now, pool_of, public_base
from services.api.errors import ApiError, not_found
from services.api.routes import Route
from services.usecases import handout
from services.usecases.ticketing import load_purchase, load_ticket

ETICKET_PATH = "/eticket/{token}"
# As the attendee pages' but without their Content-Security-Policy, under which browsers do not
# show a PDF inline.
HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def eticket_url(request: web.Request, ticket: TicketState, at: datetime) -> str | None:
    """The ticket's e-ticket link, from its fulfillment on (None before), on the configured
    public address or else the one `request` came to. It expires with the ticket's last
    scannable moment, and is not made after it (None)."""
    if not tickets.fulfilled(ticket, at) or tickets.gates_closed(ticket, at):
        return None
    claims = LinkClaims(ticket.issued.ticket_id, ticket.transfers, ticket.issued.scannable_until)
    token = request.app[HANDOUT].links.sign(claims, ticket.code)
    return public_base(request) + ETICKET_PATH.format(token=token)


def _gone(code: str, detail: str) -> ApiError:
    return ApiError(410, code, detail, HEADERS)


async def _opened(request: web.Request) -> TicketState:
    """The ticket the token was signed for, still at that code and handed out."""
    links = request.app[HANDOUT].links
    token = request.match_info["token"]
    try:
        claims = links.claims(token)
    except LinkRefused:
        raise not_found("ticket") from None
    ticket, _ = await load_ticket(pool_of(request), claims.ticket_id)
    codes = (*ticket.former_codes, ticket.code) if ticket else ()
    if ticket is None or claims.generation >= len(codes):
        raise not_found("ticket")
    at = now()
    try:
        links.verify(token, codes[claims.generation], at)
    except LinkRefused as refused:
        if refused.reason == "expired":
            raise _gone("link_expired", "the ticket can no longer be used") from None
        raise not_found("ticket") from None
    if claims.generation != ticket.transfers:
        raise _gone("link_revoked", "the ticket was transferred: this link no longer opens it")
    if ticket.status == "refunded":
        raise _gone("ticket_refunded", "the ticket was refunded")
    tickets.require_fulfilled(ticket, at)
    return ticket


async def eticket_pdf(request: web.Request) -> web.Response:
    ticket = await _opened(request)
    purchase = await load_purchase(pool_of(request), ticket.issued.purchase_token)
    if purchase is None or handout.voided(ticket, purchase):
        raise _gone("ticket_refunded", "the ticket was refunded")
    bought = [t for t in purchase.opened.tickets if t.id == ticket.issued.ticket_id]
    body = await request.app[DOCUMENTS].pdf(purchase, bought)
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={**HEADERS, "Content-Disposition": f'inline; filename="ticket-{ticket.code}.pdf"'},
    )


ROUTES = [
    Route(
        "GET",
        ETICKET_PATH,
        eticket_pdf,
        "The ticket's PDF through its signed e-ticket link (no API key)",
        "E-tickets",
        media_type="application/pdf",
        authenticated=False,
        path_params={"token": str},
    )
]
