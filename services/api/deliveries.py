"""What a paid purchase delivers: ticket PDFs (the dedicated 10/min bucket) and the
confirmation e-mail sent again on request."""

from __future__ import annotations

from aiohttp import web

from domain.purchasing import PurchaseState
from infra.mail_outbox import enqueue
from services.api.context import DOCUMENTS, PURCHASES, api_key_of, pool_of
from services.api.errors import ApiError, not_found
from services.api.http import json_response, path_int
from services.api.routes import Route
from services.api.schemas import Payload


class ResendReceipt(Payload):
    enqueued: bool
    token: str


async def _paid(request: web.Request) -> PurchaseState:
    state, _ = await request.app[PURCHASES].find(
        request.match_info["token"], api_key_of(request).organization_id
    )
    if state.status != "paid":
        raise ApiError(409, "not_yet_paid", "the purchase is not paid")
    return state


def _pdf(body: bytes, name: str) -> web.Response:
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def purchase_pdf(request: web.Request) -> web.Response:
    state = await _paid(request)
    body = await request.app[DOCUMENTS].pdf(state, as_bought=True)
    return _pdf(body, f"tickets-{state.opened.access_code}.pdf")


async def ticket_pdf(request: web.Request) -> web.Response:
    ticket_id = path_int(request, "id")
    state = await _paid(request)
    wanted = [t for t in state.opened.tickets if t.id == ticket_id]
    if not wanted:
        raise not_found("ticket")
    body = await request.app[DOCUMENTS].pdf(state, wanted, as_bought=True)
    return _pdf(body, f"ticket-{wanted[0].code}.pdf")


async def resend_email(request: web.Request) -> web.Response:
    state = await _paid(request)
    if not await request.app[DOCUMENTS].holds_any(state):
        # Answered 202 and sent nothing: the e-mail carries only the tickets still held.
        raise ApiError(
            409, "order_inactive", "every ticket of the purchase is refunded or passed on"
        )
    await enqueue(pool_of(request), state.opened.token, "resend")
    return json_response(ResendReceipt(enqueued=True, token=state.opened.token), 202)


ROUTES = [
    Route(
        "GET",
        "/api/v1/purchases/{token}/tickets/pdf",
        purchase_pdf,
        "All tickets of a paid purchase as one PDF",
        "Tickets",
        None,
        errors=(401, 404, 409, 429),
        bucket="ticket_pdf",
        media_type="application/pdf",
        path_params={"token": str},
    ),
    Route(
        "GET",
        "/api/v1/purchases/{token}/tickets/{id}/pdf",
        ticket_pdf,
        "One ticket of a paid purchase as a PDF",
        "Tickets",
        None,
        errors=(401, 404, 409, 422, 429),
        bucket="ticket_pdf",
        media_type="application/pdf",
        path_params={"token": str, "id": int},
    ),
    Route(
        "POST",
        "/api/v1/purchases/{token}/resend-email",
        resend_email,
        "Send the confirmation e-mail again",
        "Purchases",
        ResendReceipt,
        status=202,
        errors=(401, 404, 409, 429),
        path_params={"token": str},
    ),
]
