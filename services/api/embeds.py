"""The embeddable seat planner and seat-plan editor: the partner mints a signed token with its
API key, and the iframe pages, their plan and their live stream open with that token alone (no
bearer key, no cookie, not in the activity log, like the attendee pages).

A page may be framed by the gateway's own pages and by the minting key's `allowed_origins`,
read again on every page load, so a revoked key's tokens open nothing. The editor's token reads
one venue's plan and nothing else: no route writes with it."""

from __future__ import annotations

import hashlib
import re
import secrets
from html import escape
from pathlib import Path
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from domain.inventory.events import SeatRef
from infra.apikeys import ApiKey, live_key
from infra.changes import API_KEYS, read_model_channel
from infra.embed_tokens import TOKEN_SECONDS, EmbedClaims, EmbedRefused, EmbedSigner, Kind
from projections import availability, catalog
from projections.availability import AvailabilityProjection
from projections.catalog import CatalogProjection
from services.api import schemas as s
from services.api.access import KEY_SECONDS
from services.api.availability import seat_plan_sections
from services.api.context import CHANGES, HANDOUT, api_key_of, now, pool_of, snapshots_of
from services.api.embed_live import LiveFeed
from services.api.errors import ApiError, not_found
from services.api.http import answer, json_response, none_match, parse_body, snapshot
from services.api.memo import Memo
from services.api.routes import Route

TAG = "Embeds"
STATIC_DIR = Path(__file__).parent / "embed_static"
PLANNER_PATH = "/embed/seat-planner"
EDITOR_PATH = "/embed/seat-plan-editor"
MAX_SELECTIONS = 20
PING_SECONDS = 15.0
DEFAULT_COLOR = "#3b82f6"
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
# An origin as CSP source expressions write it; anything else on a key is left out of the header.
_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# The gateway's read-model channels (services.api.gateway's, which imports this module).
CATALOG_CHANGES = read_model_channel(CatalogProjection.name)
AVAILABILITY_CHANGES = read_model_channel(AvailabilityProjection.name)
_TOKEN_STATUS = {"expired": 401, "malformed": 403, "forged": 403, "wrong_kind": 403}

SIGNER: web.AppKey[EmbedSigner] = web.AppKey("embed_signer", EmbedSigner)
LIVE: web.AppKey[LiveFeed] = web.AppKey("embed_live", LiveFeed)
MINTERS: web.AppKey[Memo] = web.AppKey("embed_minters", Memo)


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: a misspelt field is a 422, not silently ignored."""


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


class EmbedVenue(s.Payload):
    id: int
    name: str
    floor_plan_width: int
    floor_plan_height: int


class EmbedTicketType(s.Payload):
    id: int
    name: str
    price_cents: int
    section_ids: list[int]


class EmbedPlan(s.Payload):
    """The partner API's seat plan with what the page draws besides: the venue, the prices."""

    venue_id: int
    event_id: int | None
    sections: list[s.SeatPlanSection]
    sold_seats: list[SeatRef]
    ticket_type_section_map: dict[str, list[int]]
    venue: EmbedVenue
    ticket_types: list[EmbedTicketType]
    currency: str


class _TakenSeats(msgspec.Struct, frozen=True):
    sold_seats: list[SeatRef]


def install(app: web.Application, signer: EmbedSigner) -> None:
    """The signer, the key lookups and the live feed the embed routes share in one gateway."""
    changes = app[CHANGES]
    app[SIGNER] = signer
    app[LIVE] = LiveFeed(changes)
    app[MINTERS] = Memo(changes, (API_KEYS,), ttl=KEY_SECONDS)

    async def close_streams(app: web.Application) -> None:
        await app[LIVE].close()

    app.on_shutdown.append(close_streams)


def _public_base(request: web.Request) -> str:
    return (request.app[HANDOUT].public_url or str(request.url.origin())).rstrip("/")


def _mint(request: web.Request, kind: Kind, subject_id: int, path: str) -> tuple[str, str]:
    key = api_key_of(request)
    token, _ = request.app[SIGNER].mint(kind, subject_id, key.organization_id, key.id, now())
    return token, f"{_public_base(request)}{path}?token={token}"


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


class _Refused(Exception):
    """Why a page or its data is not served: the status and a sentence for the error page."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _claims(request: web.Request, kinds: tuple[Kind, ...]) -> EmbedClaims:
    token = request.query.get("token", "")
    signer, moment = request.app[SIGNER], now()
    refusal: EmbedRefused | None = None
    for kind in kinds:
        try:
            return signer.verify(token, kind, moment)
        except EmbedRefused as exc:
            refusal = exc
            if exc.reason != "wrong_kind":
                break
    assert refusal is not None
    if refusal.reason == "expired":
        raise _Refused(401, "This seat map link has expired. Reload the page to get a new one.")
    raise _Refused(_TOKEN_STATUS[refusal.reason], "This seat map link is not valid.")


async def _minter(request: web.Request, claims: EmbedClaims) -> ApiKey:
    """The key that minted the token, while it is live and of the token's organization."""
    pool = pool_of(request)
    key = await request.app[MINTERS].get(
        claims.api_key_id, lambda: live_key(pool, claims.api_key_id)
    )
    if key is None or key.organization_id != claims.organization_id:
        raise _Refused(403, "This seat map link is no longer valid.")
    return key


def _frame_ancestors(key: ApiKey) -> str:
    return " ".join(["'self'", *(o for o in key.allowed_origins if _ORIGIN.fullmatch(o))])


def _headers(key: ApiKey | None, nonce: str) -> dict[str, str]:
    ancestors = _frame_ancestors(key) if key else "'none'"
    policy = (
        "default-src 'none'; script-src 'self'; "
        f"style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; "
        f"base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    )
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Robots-Tag": "noindex",
    }


def _page(status: int, title: str, body: str, head: str, nonce: str, key: ApiKey | None):
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="/embed/static/embed.css">'
        f"{head}</head><body>{body}</body></html>"
    )
    return web.Response(
        status=status, text=document, content_type="text/html", headers=_headers(key, nonce)
    )


def _error_page(refused: _Refused, key: ApiKey | None = None) -> web.Response:
    """Framed by the key's origins when the key is known, so the partner's page shows why;
    by no one otherwise."""
    body = (
        '<main class="linjerum-error" role="alert">'
        f"<h1>Seat map unavailable</h1><p>{escape(refused.reason)}</p></main>"
    )
    return _page(refused.status, "Seat map unavailable", body, "", secrets.token_urlsafe(16), key)


def _config_script(config: dict[str, object]) -> str:
    """JSON inside a script element: `<`, `>` and `&` escaped so no value can end it."""
    text = msgspec.json.encode(config).decode()
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="linjerum-embed">{text}</script>'


async def _color(pool: asyncpg.Pool, organization_id: int) -> str:
    row = await catalog.organization(pool, organization_id)
    color = row["primary_color"] if row else ""
    return color.lower() if _COLOR.fullmatch(color or "") else DEFAULT_COLOR


def _shell(
    title: str, config: dict[str, object], script: str, color: str, key: ApiKey
) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    head = f'<style nonce="{nonce}">:root{{--linjerum-primary:{color}}}</style>'
    body = (
        f'{_config_script(config)}<div id="app"></div>'
        f'<script type="module" src="/embed/static/{script}"></script>'
    )
    return _page(200, title, body, head, nonce, key)


def _max_selections(request: web.Request) -> int | None:
    raw = request.query.get("max")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_SELECTIONS:
        raise _Refused(400, f"max must be a whole number from 1 to {MAX_SELECTIONS}.")
    return int(raw)


def _urls(token: str) -> dict[str, str]:
    return {
        "plan_url": f"/embed/api/plan?token={token}",
        "live_url": f"/embed/api/live?token={token}",
    }


async def seat_planner_page(request: web.Request) -> web.Response:
    key = None
    try:
        claims = _claims(request, ("planner",))
        key = await _minter(request, claims)
        cap = _max_selections(request)
        pool = pool_of(request)
        row = await catalog.event_by_id(pool, claims.organization_id, claims.subject_id)
        if row is None:
            raise _Refused(404, "This event is not on sale here.")
        color = await _color(pool, claims.organization_id)
    except _Refused as refused:
        return _error_page(refused, key)
    token = request.query["token"]
    config: dict[str, object] = {
        "kind": "planner",
        "token": token,
        "max": cap,
        "primary_color": color,
        "event": {
            "id": row["id"],
            "slug": row["slug"],
            "name": row["name"],
            "currency": row["currency"],
        },
        **_urls(token),
    }
    return _shell(f"{row['name']}: seats", config, "planner.js", color, key)


async def seat_plan_editor_page(request: web.Request) -> web.Response:
    key = None
    try:
        claims = _claims(request, ("editor",))
        key = await _minter(request, claims)
        pool = pool_of(request)
        row = await catalog.venue(pool, claims.organization_id, claims.subject_id)
        if row is None:
            raise _Refused(404, "This venue is not available.")
        color = await _color(pool, claims.organization_id)
    except _Refused as refused:
        return _error_page(refused, key)
    token = request.query["token"]
    config: dict[str, object] = {
        "kind": "editor",
        "token": token,
        "primary_color": color,
        "venue": {"id": row["id"], "name": row["name"]},
        **_urls(token),
    }
    return _shell(f"{row['name']}: seat plan", config, "editor.js", color, key)


async def _api_claims(request: web.Request) -> EmbedClaims:
    """The data routes answer in the API's JSON envelope."""
    try:
        claims = _claims(request, ("planner", "editor"))
        await _minter(request, claims)
    except _Refused as refused:
        code = "embed_token_expired" if refused.status == 401 else "invalid_embed_token"
        raise ApiError(refused.status, code, refused.reason) from None
    return claims


async def _venue_row(pool: asyncpg.Pool, organization_id: int, venue_id: int) -> asyncpg.Record:
    row = await catalog.venue(pool, organization_id, venue_id)
    if row is None:
        raise not_found("venue")
    return row


def _embed_venue(row: asyncpg.Record) -> EmbedVenue:
    return EmbedVenue(
        id=row["id"],
        name=row["name"],
        floor_plan_width=row["floor_plan_width"],
        floor_plan_height=row["floor_plan_height"],
    )


async def _planner_plan(pool: asyncpg.Pool, claims: EmbedClaims) -> EmbedPlan:
    row = await catalog.event_by_id(pool, claims.organization_id, claims.subject_id)
    if row is None:
        raise not_found("event")
    venue = await _venue_row(pool, claims.organization_id, row["venue_id"])
    types = await catalog.ticket_types(pool, event_id=row["id"])
    return EmbedPlan(
        venue_id=row["venue_id"],
        event_id=row["id"],
        sections=seat_plan_sections(catalog.sections_of(row)),
        sold_seats=await availability.taken_seats(pool, row["id"]),
        ticket_type_section_map={str(t.id): t.section_ids for t in types},
        venue=_embed_venue(venue),
        ticket_types=[
            EmbedTicketType(
                id=t.id, name=t.name, price_cents=t.price_cents, section_ids=t.section_ids
            )
            for t in types
        ],
        currency=row["currency"],
    )


async def _editor_plan(pool: asyncpg.Pool, claims: EmbedClaims) -> EmbedPlan:
    venue = await _venue_row(pool, claims.organization_id, claims.subject_id)
    organization = await catalog.organization(pool, claims.organization_id)
    return EmbedPlan(
        venue_id=venue["id"],
        event_id=None,
        sections=seat_plan_sections(catalog.sections_of(venue)),
        sold_seats=[],
        ticket_type_section_map={},
        venue=_embed_venue(venue),
        ticket_types=[],
        currency=organization["currency"] if organization else "",
    )


async def embed_plan(request: web.Request) -> web.Response:
    claims = await _api_claims(request)
    pool = pool_of(request)
    build = _planner_plan if claims.kind == "planner" else _editor_plan
    key = ("embed_plan", claims.kind, claims.organization_id, claims.subject_id)

    async def built() -> object:
        return snapshot(await build(pool, claims))

    return answer(request, await snapshots_of(request).get(key, built))


def _sse(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _venue_fingerprint(pool: asyncpg.Pool, organization_id: int, venue_id: int):
    """What a plan change moves: the venue's size and sections."""

    async def read() -> bytes:
        row = await catalog.venue(pool, organization_id, venue_id)
        if row is None:
            return b"gone"
        return f"{row['floor_plan_width']}x{row['floor_plan_height']}:{row['sections']}".encode()

    return read


def _taken_reader(pool: asyncpg.Pool, event_id: int):
    async def read() -> bytes:
        return msgspec.json.encode(_TakenSeats(await availability.taken_seats(pool, event_id)))

    return read


async def embed_live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `taken` on connect and whenever the event's taken seats change,
    `plan` when the venue's plan does, a `: ping` comment every 15 s. The token is checked when
    the stream opens; an open stream outlives it (the page stays live while it is open)."""
    claims = await _api_claims(request)
    pool = pool_of(request)
    venue_id = claims.subject_id
    if claims.kind == "planner":
        row = await catalog.event_by_id(pool, claims.organization_id, claims.subject_id)
        if row is None:
            raise not_found("event")
        venue_id = row["venue_id"]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    live = request.app[LIVE]
    listener = live.listen()
    try:
        await response.write(b"retry: 3000\n\n")
        if claims.kind == "planner":
            taken = _taken_reader(pool, claims.subject_id)
            live.watch(
                listener,
                ("taken", claims.subject_id),
                "taken",
                AVAILABILITY_CHANGES,
                taken,
                on_connect=True,
            )
        plan = _venue_fingerprint(pool, claims.organization_id, venue_id)
        live.watch(
            listener,
            ("plan", venue_id),
            "plan",
            CATALOG_CHANGES,
            plan,
            on_connect=False,
            message=lambda _: b"{}",
        )
        while not listener.closed:
            messages = await listener.next(PING_SECONDS)
            if listener.closed:
                break
            await response.write(
                b"".join(_sse(name, data) for name, data in messages) or b": ping\n\n"
            )
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        live.leave(listener)
    return response


async def embed_static(request: web.Request) -> web.Response:
    """The pages' own scripts and styles, only those in the folder, with an ETag."""
    name = request.match_info["name"]
    kind = _STATIC_TYPES.get(Path(name).suffix)
    path = STATIC_DIR / name
    if kind is None or not _STATIC_NAME.fullmatch(name) or not path.is_file():
        raise not_found("file")
    body = path.read_bytes()
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if none_match(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": f"{kind}; charset=utf-8"})


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
