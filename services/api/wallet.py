"""Wallet passes for the partner to hand to a ticket's holder: Apple's .pkpass and Google's
"save to wallet" link. Each is made for the ticket's current code when asked for, so after a
transfer the same request answers the new holder's pass, and after a refund a void one."""

from __future__ import annotations

from aiohttp import web

from infra.wallet.apple import PKPASS, build_pkpass
from infra.wallet.google import save_jwt, save_url
from infra.wallet.ticket import WalletTicket
from services.api.context import DOCUMENTS, HANDOUT, now, organization_of, pool_of, public_base
from services.api.http import json_response
from services.api.routes import Route
from services.api.schemas import Payload
from services.usecases import handout

WALLET_PATH = "/api/v1/tickets/uid/{uid}/wallet"
TAG = "Tickets"


class GoogleWalletLink(Payload):
    url: str
    jwt: str


async def _wallet_ticket(request: web.Request) -> WalletTicket:
    ticket, purchase = await handout.partner_ticket(
        pool_of(request), request.match_info["uid"], organization_of(request), now()
    )
    return await handout.wallet_ticket(request.app[DOCUMENTS], ticket, purchase)


async def apple_wallet_pass(request: web.Request) -> web.Response:
    ticket = await _wallet_ticket(request)
    body = build_pkpass(ticket, request.app[HANDOUT].apple())
    return web.Response(
        body=body,
        content_type=PKPASS,
        headers={
            "Content-Disposition": f'attachment; filename="ticket-{ticket.serial}.pkpass"',
            "Cache-Control": "no-store",
        },
    )


async def google_wallet_link(request: web.Request) -> web.Response:
    ticket = await _wallet_ticket(request)
    jwt = save_jwt(ticket, request.app[HANDOUT].google(), [public_base(request)], now())
    return json_response(GoogleWalletLink(url=save_url(jwt), jwt=jwt))


ROUTES = [
    Route(
        "GET",
        WALLET_PATH + "/apple",
        apple_wallet_pass,
        "The ticket's Apple Wallet pass (.pkpass; void once refunded)",
        TAG,
        media_type=PKPASS,
        errors=(404, 409),
        path_params={"uid": str},
    ),
    Route(
        "GET",
        WALLET_PATH + "/google",
        google_wallet_link,
        "The ticket's Google Wallet save link and its JWT (inactive once refunded)",
        TAG,
        GoogleWalletLink,
        errors=(404, 409),
        path_params={"uid": str},
    ),
]
