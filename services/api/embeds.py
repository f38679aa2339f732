"""The embeddable seat planner and seat-plan editor: the partner mints a signed token with its
API key, and the iframe pages, their plan and their live stream open with that token alone (no
bearer key, no cookie, not in the activity log, like the attendee pages).

A page may be framed by the gateway's own pages and by the minting key's `allowed_origins`,
read again on every page load, so a revoked key's tokens open nothing. The editor's token reads
one venue's plan and nothing else: no route writes with it."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import Meta

from infra.changes import API_KEYS
from infra.embed_tokens import TOKEN_SECONDS, EmbedSigner, Kind
from projections import catalog
from services.api import schemas as s
from services.api.access import KEY_SECONDS
from services.api.context import CHANGES, api_key_of, now, pool_of, public_base
from services.api.embed_live import LiveFeed
from services.api.embed_pages import (
    MINTERS,
    SIGNER,
    embed_static,
    seat_plan_editor_page,
    seat_planner_page,
)
from services.api.embed_plans import LIVE, EmbedPlan, embed_live, embed_plan
from services.api.errors import not_found
from services.api.http import json_response, parse_body
from services.api.memo import Memo
from services.api.routes import Route
from services.api.schemas import Request

TAG = "Embeds"
PLANNER_PATH = "/embed/seat-planner"
EDITOR_PATH = "/embed/seat-plan-editor"


class SeatPlannerEmbedRequest(Request):
    event_slug: Annotated[str, Meta(min_length=1, max_length=200)]


class SeatPlanEditorEmbedRequest(Request):
    venue_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]


class EmbedEvent(s.Payload):
    id: int
    slug: str
    name: str


class EmbedVenueRef(s.Payload):
    id: int
    name: str


class SeatPlannerEmbed(s.Payload):
    url: str
    token: str
    expires_in: int
    event: EmbedEvent


class SeatPlanEditorEmbed(s.Payload):
    url: str
    token: str
    expires_in: int
    venue: EmbedVenueRef


class SeatPlannerEmbedResponse(s.Payload):
    embed: SeatPlannerEmbed


class SeatPlanEditorEmbedResponse(s.Payload):
    embed: SeatPlanEditorEmbed


def install(app: web.Application, signer: EmbedSigner) -> None:
    """The signer, the key lookups and the live feed the embed routes share in one gateway."""
    changes = app[CHANGES]
    app[SIGNER] = signer
    app[LIVE] = LiveFeed(changes)
    app[MINTERS] = Memo(changes, (API_KEYS,), ttl=KEY_SECONDS)

    async def close_streams(app: web.Application) -> None:
        await app[LIVE].close()

    app.on_shutdown.append(close_streams)


def _mint(request: web.Request, kind: Kind, subject_id: int, path: str) -> tuple[str, str]:
    key = api_key_of(request)
    token, _ = request.app[SIGNER].mint(kind, subject_id, key.organization_id, key.id, now())
    return token, f"{public_base(request)}{path}?token={token}"


async def mint_seat_planner(request: web.Request) -> web.Response:
    """A published or cancelled event of the caller's organization; a draft is a 404."""
    body = await parse_body(request, SeatPlannerEmbedRequest)
    row = await catalog.event(
        pool_of(request), api_key_of(request).organization_id, body.event_slug
    )
    if row is None:
        raise not_found("event")
    token, url = _mint(request, "planner", row["id"], PLANNER_PATH)
    event = EmbedEvent(id=row["id"], slug=row["slug"], name=row["name"])
    embed = SeatPlannerEmbed(url=url, token=token, expires_in=TOKEN_SECONDS, event=event)
    return json_response(SeatPlannerEmbedResponse(embed=embed))


async def mint_seat_plan_editor(request: web.Request) -> web.Response:
    body = await parse_body(request, SeatPlanEditorEmbedRequest)
    organization_id = api_key_of(request).organization_id
    row = await catalog.venue(pool_of(request), organization_id, body.venue_id)
    if row is None:
        raise not_found("venue")
    token, url = _mint(request, "editor", row["id"], EDITOR_PATH)
    venue = EmbedVenueRef(id=row["id"], name=row["name"])
    embed = SeatPlanEditorEmbed(url=url, token=token, expires_in=TOKEN_SECONDS, venue=venue)
    return json_response(SeatPlanEditorEmbedResponse(embed=embed))


def _page_route(path: str, handler, summary: str) -> Route:
    return Route("GET", path, handler, summary, TAG, media_type="text/html", authenticated=False)


ROUTES = [
    Route(
        "POST",
        "/api/v1/embed/seat-planner",
        mint_seat_planner,
        "Mint a signed seat-planner iframe URL for an event (valid 15 minutes)",
        TAG,
        SeatPlannerEmbedResponse,
        body=SeatPlannerEmbedRequest,
        errors=(401, 404, 422, 429),
    ),
    Route(
        "POST",
        "/api/v1/embed/seat-plan-editor",
        mint_seat_plan_editor,
        "Mint a signed seat-plan-editor iframe URL for a venue (valid 15 minutes)",
        TAG,
        SeatPlanEditorEmbedResponse,
        body=SeatPlanEditorEmbedRequest,
        errors=(401, 404, 422, 429),
    ),
    _page_route(PLANNER_PATH, seat_planner_page, "The seat planner iframe page"),
    _page_route(EDITOR_PATH, seat_plan_editor_page, "The seat-plan editor iframe page"),
    Route(
        "GET",
        "/embed/api/plan",
        embed_plan,
        "The embedded page's seat plan",
        TAG,
        EmbedPlan,
        authenticated=False,
    ),
    Route(
        "GET",
        "/embed/api/live",
        embed_live,
        "The embedded page's live updates (server-sent events)",
        TAG,
        media_type="text/event-stream",
        authenticated=False,
    ),
    Route(
        "GET",
        "/embed/static/{name}",
        embed_static,
        "The embedded pages' scripts and styles",
        TAG,
        media_type="text/javascript",
        authenticated=False,
        path_params={"name": str},
    ),
]
