"""The iframe pages a minted token opens, with the error page they show instead, and the pages'
own scripts and styles: everything served as HTML or a static file, and the token and key
checks the pages and their data share."""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from html import escape
from pathlib import Path

import asyncpg
import msgspec
from aiohttp import web

from infra.apikeys import ORIGIN, ApiKey, live_key
from infra.embed_tokens import EmbedClaims, EmbedRefused, EmbedSigner, Kind
from projections import catalog
from services.api.context import now, pool_of
from services.api.errors import not_found
from services.api.http import none_match
from services.api.memo import Memo

STATIC_DIR = Path(__file__).parent / "embed_static"
MAX_SELECTIONS = 20
DEFAULT_COLOR = "#3b82f6"
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_TOKEN_STATUS = {"expired": 401, "malformed": 403, "forged": 403, "wrong_kind": 403}

SIGNER: web.AppKey[EmbedSigner] = web.AppKey("embed_signer", EmbedSigner)
MINTERS: web.AppKey[Memo] = web.AppKey("embed_minters", Memo)


class Refused(Exception):
    """Why a page or its data is not served: the status and a sentence for the error page."""

    def __init__(self, status: int, reason: str, claims: EmbedClaims | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        # Of a token we signed that expired or is of another kind: its key may frame the page.
        self.claims = claims


def token_claims(request: web.Request, kinds: tuple[Kind, ...]) -> EmbedClaims:
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
        raise Refused(
            401, "This seat map link has expired. Reload the page to get a new one.", refusal.claims
        )
    raise Refused(_TOKEN_STATUS[refusal.reason], "This seat map link is not valid.", refusal.claims)


async def minter(request: web.Request, claims: EmbedClaims) -> ApiKey:
    """The key that minted the token, while it is live and of the token's organization."""
    pool = pool_of(request)
    key = await request.app[MINTERS].get(
        claims.api_key_id, lambda: live_key(pool, claims.api_key_id)
    )
    if key is None or key.organization_id != claims.organization_id:
        raise Refused(403, "This seat map link is no longer valid.")
    return key


def _frame_ancestors(key: ApiKey) -> str:
    # Keys made before origins were checked may hold something else: it is left out.
    return " ".join(["'self'", *(o for o in key.allowed_origins if ORIGIN.fullmatch(o))])


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


async def _error_page(
    request: web.Request, refused: Refused, key: ApiKey | None = None
) -> web.Response:
    """Framed by the key's origins when the key is known (an expired token still names it),
    so the partner's page shows why; by no one otherwise."""
    if key is None and refused.claims is not None:
        with contextlib.suppress(Refused):
            key = await minter(request, refused.claims)
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
    whole = raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_SELECTIONS))
    if not whole or not 1 <= int(raw) <= MAX_SELECTIONS:
        raise Refused(400, f"max must be a whole number from 1 to {MAX_SELECTIONS}.")
    return int(raw)


def links(token: str) -> dict[str, str]:
    return {
        "plan_url": f"/embed/api/plan?token={token}",
        "live_url": f"/embed/api/live?token={token}",
    }


async def seat_planner_page(request: web.Request) -> web.Response:
    key = None
    try:
        claims = token_claims(request, ("planner",))
        key = await minter(request, claims)
        cap = _max_selections(request)
        pool = pool_of(request)
        row = await catalog.event_by_id(pool, claims.organization_id, claims.subject_id)
        if row is None:
            raise Refused(404, "This event is not on sale here.")
        if row["status"] == "cancelled":  # no seat of it can be bought: none offered to pick
            raise Refused(410, "This event is cancelled: no seats can be picked.", claims)
        color = await _color(pool, claims.organization_id)
    except Refused as refused:
        return await _error_page(request, refused, key)
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
        **links(token),
    }
    return _shell(f"{row['name']}: seats", config, "planner.js", color, key)


async def seat_plan_editor_page(request: web.Request) -> web.Response:
    key = None
    try:
        claims = token_claims(request, ("editor",))
        key = await minter(request, claims)
        pool = pool_of(request)
        row = await catalog.venue(pool, claims.organization_id, claims.subject_id)
        if row is None:
            raise Refused(404, "This venue is not available.")
        color = await _color(pool, claims.organization_id)
    except Refused as refused:
        return await _error_page(request, refused, key)
    token = request.query["token"]
    config: dict[str, object] = {
        "kind": "editor",
        "token": token,
        "primary_color": color,
        "venue": {"id": row["id"], "name": row["name"]},
        **links(token),
    }
    return _shell(f"{row['name']}: seat plan", config, "editor.js", color, key)


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
