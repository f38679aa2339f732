"""The attendee's own pages, the links in the confirmation e-mail: `/attendee/<token>` shows one
ticket (event, seat, holder, code as a QR) and `/attendee/<token>/ticket.pdf` is its PDF. They
take no API key, since the person who opens them has none: the seat's attendee token (128
random bits, handed out only in that e-mail and to the partner) is the capability.

Every token that does not open a ticket, malformed, unknown or of a purchase no longer paid
for, gets the same 404 page after the same single indexed lookup, so nothing tells a guessed
token from a near miss. Every value on the page is HTML-escaped; the page loads nothing and
sends no Referer, so the token in its address goes nowhere else."""

from __future__ import annotations

import re
from html import escape

import asyncpg
import segno
from aiohttp import web

from domain import tickets
from domain.purchasing import PurchaseState
from domain.tickets import TicketState
from infra import handed_out
from infra.tickets_pdf import TicketPage, format_money, place_line, when_lines
from services.api.context import DOCUMENTS, now, pool_of
from services.api.routes import Route
from services.usecases.ticketing import load_purchase, load_ticket

PAGE_PATH = "/attendee/{token}"
TOKEN_FORMAT = re.compile(r"tok_[0-9a-f]{32}")
TAG = "Attendee pages"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
}
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}"
    "header{color:#fff;padding:.8rem 1rem;border-radius:.4rem;font-weight:bold}"
    ".code{font-family:monospace;font-size:1.2rem}svg{width:12rem;height:12rem}"
)


def attendee_link(base_url: str) -> str:
    """The attendee link template for e-mails, `{token}` to be filled in, on `base_url` (the
    address people reach this service at)."""
    return base_url.rstrip("/") + PAGE_PATH


async def _lookup(pool: asyncpg.Pool, token: str) -> tuple[TicketState, PurchaseState] | None:
    """The ticket and purchase a token opens, if it opens one that is paid for."""
    if not TOKEN_FORMAT.fullmatch(token):
        return None
    handle = await handed_out.ticket_by_attendee_token(pool, token)
    if handle is None:
        return None
    ticket, _ = await load_ticket(pool, handle.ticket_id)
    purchase = await load_purchase(pool, handle.purchase_token)
    if ticket is None or purchase is None or purchase.status != "paid" or purchase.refunded:
        return None
    if ticket.attendee_token != token:
        return None  # the token the ticket had before it was transferred
    if ticket.status == "refunded":
        return None  # no longer paid for, as a whole purchase refunded
    return ticket, purchase


async def _handed_out(
    request: web.Request,
) -> tuple[TicketPage, TicketState, PurchaseState] | web.Response:
    """The ticket's page, or the answer instead: not found, or not handed out yet (the
    e-mail's links reach guests before the event hands its tickets out)."""
    found = await _lookup(pool_of(request), request.match_info["token"])
    if found is None:
        return _not_found()
    ticket, purchase = found
    if not tickets.fulfilled(ticket, now()):
        return _not_yet(ticket)
    bought = [t for t in purchase.opened.tickets if t.id == ticket.issued.ticket_id]
    (page,) = await request.app[DOCUMENTS].pages(purchase, bought)
    return page, ticket, purchase


def _html(status: int, title: str, body: str) -> web.Response:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(status=status, text=document, content_type="text/html", headers=HEADERS)


def _not_found() -> web.Response:
    return _html(
        404,
        "Ticket not found",
        "<h1>Ticket not found</h1><p>This link does not open a ticket. Check that it was"
        " copied whole from the confirmation e-mail.</p>",
    )


def _ticket_html(page: TicketPage, token: str, scanned: bool) -> str:
    rows = [*when_lines(page), page.venue_name, page.venue_address, place_line(page)]
    if page.holder_name:
        rows.append(f"Name: {page.holder_name}")
    rows.append(f"{page.ticket_type_name} · {format_money(page.price_cents, page.currency)}")
    if scanned:
        rows.append("Already scanned at the entrance.")
    items = "".join(f"<li>{escape(row)}</li>" for row in rows if row)
    qr = segno.make(page.scan_code, error="m", micro=False).svg_inline(scale=4, border=4)
    return (
        f'<header style="background:{escape(page.organization_color)}">'
        f"{escape(page.organization_name)}</header>"
        f"<h1>{escape(page.product_name)}</h1><ul>{items}</ul>{qr}"
        f'<p class="code">{escape(page.ticket_code)}</p>'
        "<p>Show the QR code at the entrance. One admission per ticket.</p>"
        f'<p><a href="{escape(token)}/ticket.pdf">Download the ticket as PDF</a></p>'
    )


def _not_yet(ticket: TicketState) -> web.Response:
    """The page a guest opens from the e-mail before the tickets are handed out: when they are."""
    starts = ticket.issued.terms.fulfillment_starts_at
    when = f" from {starts:%Y-%m-%d %H:%M} UTC" if starts else " later"
    return _html(
        409,
        "Ticket not handed out yet",
        f"<h1>Not handed out yet</h1><p>This ticket is handed out{escape(when)}: open this"
        " link again then to see it and its QR code.</p>",
    )


async def attendee_page(request: web.Request) -> web.Response:
    found = await _handed_out(request)
    if isinstance(found, web.Response):
        return found
    page, ticket, _ = found
    body = _ticket_html(page, request.match_info["token"], ticket.scan_count > 0)
    return _html(200, page.product_name, body)


async def attendee_pdf(request: web.Request) -> web.Response:
    found = await _handed_out(request)
    if isinstance(found, web.Response):
        return found
    page, ticket, purchase = found
    bought = [t for t in purchase.opened.tickets if t.id == ticket.issued.ticket_id]
    body = await request.app[DOCUMENTS].pdf(purchase, bought)
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={
            **HEADERS,
            "Content-Disposition": f'attachment; filename="ticket-{page.ticket_code}.pdf"',
        },
    )


ROUTES = [
    Route(
        "GET",
        PAGE_PATH,
        attendee_page,
        "The attendee's ticket page (the e-mail's link; the token is the capability)",
        TAG,
        media_type="text/html",
        authenticated=False,
        path_params={"token": str},
    ),
    Route(
        "GET",
        PAGE_PATH + "/ticket.pdf",
        attendee_pdf,
        "The attendee's ticket as PDF",
        TAG,
        media_type="application/pdf",
        authenticated=False,
        path_params={"token": str},
    ),
]
