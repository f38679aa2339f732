"""The spec's "Try it live" page, which `linjerum run` serves beside the API when it has the demo
key: the seat-plan editor and the seat planner of the demo theatre side by side, with the
messages they post listed below. Its backend mints both embeds with the demo key over HTTP, as a
partner's backend would, so the key never reaches the browser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from services.api.embed_pages import STATIC_DIR
from services.dev.partner_backend import Refused, call_api, with_client

PATH = "/embed/try"
EVENT_SLUG = "hamlet-2026"
# The embed pages' policy, plus the two frames the page holds (both from this origin).
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class TrySettings:
    """Where the page's backend reaches the API, and with which key."""

    api_base: str
    api_key: str
    event_slug: str = EVENT_SLUG


SETTINGS = web.AppKey("settings", TrySettings)


def try_live(settings: TrySettings) -> web.Application:
    """Mounted at PATH: the page at PATH itself, the freshly minted embeds at PATH/embeds."""
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(with_client)
    app.router.add_get("", _page)
    app.router.add_get("/embeds", _embeds)
    return app


async def _page(request: web.Request) -> web.Response:
    page = (STATIC_DIR / "try.html").read_text()
    return web.Response(text=page, content_type="text/html", headers=HEADERS)


async def _api(request: web.Request, method: str, path: str, body: Any = None) -> Any:
    settings = request.app[SETTINGS]
    return await call_api(request, settings.api_base, settings.api_key, method, path, body)


def _framed(embed: dict[str, Any]) -> dict[str, Any]:
    """The embed with its URL made relative, so the frames load from whatever host name the
    visitor used for this page, which the embeds' frame-ancestors 'self' allows."""
    return {**embed, "url": str(URL(embed["url"]).relative())}


async def _embeds(request: web.Request) -> web.Response:
    slug = request.app[SETTINGS].event_slug
    try:
        event = await _api(request, "GET", f"/api/v1/events/{slug}")
        venue = {"venue_id": event["event"]["venue"]["id"]}
        planner = await _api(request, "POST", "/api/v1/embed/seat-planner", {"event_slug": slug})
        editor = await _api(request, "POST", "/api/v1/embed/seat-plan-editor", venue)
    except Refused as refused:
        return web.json_response({"error": "embeds_unavailable"}, status=refused.status)
    embeds = {"planner": _framed(planner["embed"]), "editor": _framed(editor["embed"])}
    return web.json_response(embeds, headers={"Cache-Control": "no-store"})
