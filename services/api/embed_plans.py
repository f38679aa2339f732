"""The data the iframe pages read with their token: the seat plan as JSON and the live stream
of taken seats and plan changes. A refused token is answered in the API's JSON envelope here,
not with the pages' error page."""

from __future__ import annotations

import time

import asyncpg
import msgspec
from aiohttp import web

from domain.inventory.events import SeatRef
from domain.pricing import unit_price
from infra.changes import read_model_channel
from infra.embed_tokens import EmbedClaims
from projections import availability, catalog
from projections.availability import AvailabilityProjection
from projections.catalog import CatalogProjection
from services.api import schemas as s
from services.api.availability import seat_plan_sections
from services.api.context import now, pool_of, snapshots_of
from services.api.embed_live import LiveFeed
from services.api.embed_pages import SIGNER, Refused, links, minter, token_claims
from services.api.errors import ApiError, not_found
from services.api.http import answer, snapshot

PING_SECONDS = 15.0
# How often an open stream hands its page fresh links (a token lives 15 minutes): a page open
# for hours reloads a changed plan, and reconnects after a gateway restart, with them.
RENEW_SECONDS = 300.0
# How soon an open stream notices its key was revoked (the key is read from memory).
KEY_CHECK_SECONDS = 2.0
# The gateway's read-model channels (services.api.gateway's, which imports this module through
# services.api.embeds).
CATALOG_CHANGES = read_model_channel(CatalogProjection.name)
AVAILABILITY_CHANGES = read_model_channel(AvailabilityProjection.name)

LIVE: web.AppKey[LiveFeed] = web.AppKey("embed_live", LiveFeed)


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


async def _api_claims(request: web.Request) -> EmbedClaims:
    """The data routes answer in the API's JSON envelope."""
    try:
        claims = token_claims(request, ("planner", "editor"))
        await minter(request, claims)
    except Refused as refused:
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
                id=t.id,
                name=t.name,
                price_cents=unit_price(t, now())[0],  # the early-bird price while it runs
                section_ids=t.section_ids,
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


def _renewed(request: web.Request, claims: EmbedClaims) -> bytes:
    """The page's plan and live links under a new token for what the open stream's token
    opened: the stream checks its key all along, so it may hand out what the key would."""
    token, _ = request.app[SIGNER].mint(
        claims.kind, claims.subject_id, claims.organization_id, claims.api_key_id, now()
    )
    return msgspec.json.encode(links(token))


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
    `plan` when the venue's plan does, `links` (fresh plan and live links) every
    RENEW_SECONDS, a `: ping` comment every 15 s. The token is checked when the stream opens; an
    open stream outlives its expiry (the page stays live while it is open, and `plan` carries
    the links to read the new plan with), not its key: a revoked key's streams end within
    KEY_CHECK_SECONDS."""
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
            message=lambda _: b"",  # its data: the links to read it with (`_renewed`)
        )
        quiet_since = renewed_at = time.monotonic()
        while not listener.closed:
            messages = await listener.next(KEY_CHECK_SECONDS)
            if listener.closed:
                break
            await minter(request, claims)  # in memory until a key changes
            changed = any(name == "plan" for name, _ in messages)
            if changed or time.monotonic() - renewed_at >= RENEW_SECONDS:
                messages = [m for m in messages if m[0] != "plan"]
                messages.append(("plan" if changed else "links", _renewed(request, claims)))
                renewed_at = time.monotonic()
            if messages:
                await response.write(b"".join(_sse(name, data) for name, data in messages))
            elif time.monotonic() - quiet_since >= PING_SECONDS:
                await response.write(b": ping\n\n")
            else:
                continue
            quiet_since = time.monotonic()
    except (ConnectionResetError, ConnectionError, Refused):
        pass
    finally:
        live.leave(listener)
    return response
