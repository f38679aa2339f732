"""A demo partner shop that `linjerum run` serves beside the API (with the Stripe simulator
only): the spec's "Complete example" end to end. Its page embeds the seat planner; its backend
holds the demo API key, mints the planner's token, creates the purchase with the picked seats,
pays it on the simulator (as the buyer's browser would with Stripe.js) and hands the tickets
back. It is not part of the API: a partner's backend runs elsewhere and calls the API over
HTTP, as this one does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from services.dev.demo_shop_page import PAGE
from services.dev.partner_backend import CLIENT, Refused, call_api, with_client

PATH = "/demo-shop/"
EVENT_SLUG = "hamlet-2026"
PAYMENT_INTENT = re.compile(r"pi_[A-Za-z0-9_]{1,100}")
PURCHASE_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,100}")


@dataclass(frozen=True)
class ShopSettings:
    """Where the shop's backend reaches the API and the simulator, and with which key."""

    api_base: str
    api_key: str
    simulator_base: str
    event_slug: str = EVENT_SLUG
    # Where browsers load the embed pages: empty when the shop shares the API's origin (as
    # under `linjerum run`), which the embed's frame-ancestors 'self' allows.
    embed_origin: str = ""


SETTINGS = web.AppKey("settings", ShopSettings)


def demo_shop(settings: ShopSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(with_client)
    app.router.add_get("/", _page)
    app.router.add_post("/api/planner", _planner)
    app.router.add_post("/api/purchases", _purchase)
    app.router.add_post("/api/purchases/{token}/pay", _pay)
    app.router.add_get("/api/purchases/{token}", _status)
    app.router.add_get("/api/purchases/{token}/tickets.pdf", _tickets_pdf)
    return app


async def _api(request: web.Request, method: str, path: str, body: Any = None) -> Any:
    """The partner API's answer, as a partner's backend calls it: with the API key."""
    settings = request.app[SETTINGS]
    return await call_api(request, settings.api_base, settings.api_key, method, path, body)


async def _answer(request: web.Request, work: Any) -> web.Response:
    try:
        return web.json_response(await work)
    except Refused as refused:
        return web.json_response(refused.body, status=refused.status)


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def _planner(request: web.Request) -> web.Response:
    return await _answer(request, _mint(request))


async def _mint(request: web.Request) -> dict[str, Any]:
    """A fresh planner token per page view. Without an embed origin the frame loads the embed
    URL's path from the shop's own origin, whatever host name the visitor used."""
    settings = request.app[SETTINGS]
    body = {"event_slug": settings.event_slug}
    embed = (await _api(request, "POST", "/api/v1/embed/seat-planner", body))["embed"]
    src = settings.embed_origin + str(URL(embed["url"]).relative())
    return {"src": src, "event": embed["event"]}


async def _purchase(request: web.Request) -> web.Response:
    return await _answer(request, _place(request))


async def _place(request: web.Request) -> dict[str, Any]:
    """The purchase of the picked seats, each under the event's first ticket type that may use
    its section."""
    picked = await _object(request)
    seats = picked.get("seats") or []
    if not isinstance(seats, list) or not all(isinstance(seat, dict) for seat in seats):
        raise _malformed("seats: a list of seats")
    slug = request.app[SETTINGS].event_slug
    event = await _api(request, "GET", f"/api/v1/events/{slug}")
    selected: dict[str, list[dict[str, Any]]] = {}
    for seat in seats:
        section = seat.get("section_id")
        ticket_type = next((t for t in event["ticket_types"] if section in t["section_ids"]), None)
        if ticket_type is None:
            raise Refused(422, {"error": "invalid_request", "detail": f"no ticket for {seat}"})
        selected.setdefault(str(ticket_type["id"]), []).append(seat)
    order = {
        "event_slug": slug,
        "quantities": {type_id: len(seats) for type_id, seats in selected.items()},
        "selected_seats": selected,
        "buyer": picked.get("buyer") or {},
    }
    created = await _api(request, "POST", "/api/v1/purchases", order)
    purchase = created["purchase"]
    return {
        "token": purchase["token"],
        "total_cents": purchase["total_cents"],
        "currency": purchase["currency"],
        "payment_intent_id": created["payment"]["stripe_payment_intent_id"],
    }


async def _pay(request: web.Request) -> web.Response:
    """Pays as the buyer's browser would with Stripe.js and the simulator's test card."""
    try:
        intent = (await _object(request)).get("payment_intent_id") or ""
    except Refused as refused:
        return web.json_response(refused.body, status=refused.status)
    if not isinstance(intent, str) or not PAYMENT_INTENT.fullmatch(intent):
        return web.json_response({"error": "invalid_request"}, status=422)
    simulator = request.app[SETTINGS].simulator_base
    url = f"{simulator}/_sim/payment_intents/{intent}/succeed"
    async with request.app[CLIENT].post(url) as response:
        return web.json_response({"paid": response.status < 400}, status=response.status)


async def _object(request: web.Request) -> dict[str, Any]:
    """The page's JSON object; anything else is the API's 422, not a traceback."""
    try:
        body = await request.json()
    except ValueError:
        raise _malformed("body: malformed JSON") from None
    if not isinstance(body, dict):
        raise _malformed("body: a JSON object")
    return body


def _malformed(detail: str) -> Refused:
    return Refused(422, {"error": "invalid_request", "detail": detail})


async def _status(request: web.Request) -> web.Response:
    return await _answer(request, _purchase_view(request))


async def _purchase_view(request: web.Request) -> dict[str, Any]:
    token = _token(request)
    purchase = (await _api(request, "GET", f"/api/v1/purchases/{token}"))["purchase"]
    return {
        "status": purchase["status"],
        "paid": purchase["paid_at"] is not None,
        "tickets": [
            {"code": t["ticket_code"], "type": t["ticket_type_name"], "seat": t["seat"]}
            for t in purchase["tickets"]
        ],
        "pdf_url": f"{PATH}api/purchases/{token}/tickets.pdf",
    }


async def _tickets_pdf(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    url = f"{settings.api_base}/api/v1/purchases/{_token(request)}/tickets/pdf"
    headers = {"Authorization": f"Bearer {settings.api_key}"}
    async with request.app[CLIENT].get(url, headers=headers) as response:
        return web.Response(
            body=await response.read(),
            status=response.status,
            content_type=response.content_type,
        )


def _token(request: web.Request) -> str:
    token = request.match_info["token"]
    if not PURCHASE_TOKEN.fullmatch(token):
        raise web.HTTPNotFound()
    return token
