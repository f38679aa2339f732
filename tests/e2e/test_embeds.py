"""The embeds over HTTP, without a browser: minting signed iframe URLs, the pages' HTML shell
and Content-Security-Policy, refused tokens, the page's plan, and its live stream seeing a seat
bought through the API."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from domain import catalog as c
from domain import venues
from infra.apikeys import create_key, revoke_key
from infra.embed_tokens import EmbedSigner
from services.api import embed_plans
from services.dev.sample_event import put_on_sale
from services.usecases import catalog_commands
from tests.e2e.conftest import (
    TEST,
    bearer,
    new_organization,
    order,
    post,
    rebuild_read_models,
    venue_with,
)

PLANNER = "/api/v1/embed/seat-planner"
EDITOR = "/api/v1/embed/seat-plan-editor"
ORIGINS = ["https://shop.example.com", "https://staging.shop.example.com"]
CONFIG = re.compile(r'<script type="application/json" id="linjerum-embed">(.*?)</script>')


@dataclass(frozen=True)
class Scene:
    token: str
    key_id: int
    organization_id: int
    venue_id: int
    event_id: int
    type_id: int


async def _scene(pool: asyncpg.Pool, origins: list[str] | None = None) -> Scene:
    """A fresh organization with a 20-seat hall, the published event `show` and the draft
    `rehearsal`, and a key with `origins`."""
    org = await new_organization(pool)
    row = venues.Row(identifier="A", start=1, end=20)
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=10000, max_per_purchase=20)
    event_id, type_id = await put_on_sale(pool, org, venue_id, plan, TEST)
    venue = await catalog_commands.load_venue(pool, venue_id)
    await catalog_commands.schedule_event(
        pool,
        org,
        c.ScheduleEvent(
            slug="rehearsal",
            name="Rehearsal",
            venue_id=venue_id,
            event_date=datetime.now(UTC) + timedelta(days=3),
            publish=False,
            ticket_types=[
                c.TicketTypePlan(name="Alm", price_cents=1, section_ids=[venue.sections[0].id])
            ],
            terms=c.TicketTerms(),
        ),
        TEST,
    )
    await rebuild_read_models(pool)
    issued = await create_key(
        pool, org, "embeds", allowed_origins=origins, rate_limit_per_minute=10_000, metadata=TEST
    )
    return Scene(issued.token, issued.key.id, org, venue_id, event_id, type_id)


@pytest.fixture
async def scene(pool: asyncpg.Pool, catalog: dict[str, int]) -> Scene:
    return await _scene(pool, ORIGINS)


def _config(html: str) -> dict[str, Any]:
    found = CONFIG.search(html)
    assert found, html
    return json.loads(found.group(1))


def _csp(headers) -> dict[str, str]:
    policy = headers["Content-Security-Policy"]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in (p.strip() for p in policy.split(";"))}


def _path(url: str) -> str:
    return url[url.index("/embed/") :]


async def test_minting_answers_a_signed_absolute_url(api, scene: Scene) -> None:
    _, body = await post(api, scene.token, PLANNER, {"event_slug": "show"}, 200)
    embed = body["embed"]
    assert set(embed) == {"url", "token", "expires_in", "event"}
    assert embed["expires_in"] == 900
    assert embed["event"] == {"id": scene.event_id, "slug": "show", "name": "Show"}
    assert re.fullmatch(r"https?://[^/]+/embed/seat-planner\?token=" + embed["token"], embed["url"])

    _, body = await post(api, scene.token, EDITOR, {"venue_id": scene.venue_id}, 200)
    embed = body["embed"]
    assert set(embed) == {"url", "token", "expires_in", "venue"}
    assert embed["expires_in"] == 900 and embed["venue"] == {"id": scene.venue_id, "name": "Sal"}
    assert embed["url"].endswith("/embed/seat-plan-editor?token=" + embed["token"])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (PLANNER, {}, "event_slug"),
        (PLANNER, {"event_slug": 5}, "event_slug"),
        (PLANNER, {"event_slug": "show", "max": 4}, "max"),
        (EDITOR, {"venue_id": "x"}, "venue_id"),
        (EDITOR, {"venue_id": 0}, "venue_id"),
        (EDITOR, {}, "venue_id"),
    ],
)
async def test_malformed_bodies_are_422(
    api, scene: Scene, path: str, body: dict, field: str
) -> None:
    _, answer = await post(api, scene.token, path, body, 422)
    assert answer["error"] == "invalid_request" and answer["detail"].startswith(field)


async def test_another_organizations_or_a_draft_is_not_found(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    other = await _scene(pool)
    await post(api, other.token, PLANNER, {"event_slug": "rehearsal"}, 404)
    await post(api, scene.token, EDITOR, {"venue_id": other.venue_id}, 404)
    response = await api.post(PLANNER, json={"event_slug": "show"})
    assert response.status == 401


async def _mint(api, scene: Scene, kind: str = "planner") -> str:
    if kind == "planner":
        _, body = await post(api, scene.token, PLANNER, {"event_slug": "show"}, 200)
    else:
        _, body = await post(api, scene.token, EDITOR, {"venue_id": scene.venue_id}, 200)
    return body["embed"]["token"]


async def test_the_planner_page_is_the_shell_framed_only_by_the_keys_origins(
    api, scene: Scene
) -> None:
    token = await _mint(api, scene)
    response = await api.get(f"/embed/seat-planner?token={token}&max=4")
    html = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    assert html.startswith("<!doctype html>")
    assert '<link rel="stylesheet" href="/embed/static/embed.css">' in html
    assert '<div id="app"></div>' in html
    assert '<script type="module" src="/embed/static/planner.js"></script>' in html
    assert "Set-Cookie" not in response.headers
    config = _config(html)
    assert config == {
        "kind": "planner",
        "token": token,
        "max": 4,
        "primary_color": config["primary_color"],
        "event": {"id": scene.event_id, "slug": "show", "name": "Show", "currency": "DKK"},
        "plan_url": f"/embed/api/plan?token={token}",
        "live_url": f"/embed/api/live?token={token}",
    }
    assert re.fullmatch(r"#[0-9a-f]{6}", config["primary_color"])
    csp = _csp(response.headers)
    assert csp["frame-ancestors"] == "'self' " + " ".join(ORIGINS)
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'"
    nonce = re.search(r"'nonce-([^']+)'", csp["style-src"]).group(1)
    assert f'<style nonce="{nonce}">' in html and "--linjerum-primary:" in html
    unlimited = _config(await (await api.get(f"/embed/seat-planner?token={token}")).text())
    assert unlimited["max"] is None


async def test_the_editor_page_of_a_key_without_origins_is_framed_by_self_only(
    api, pool: asyncpg.Pool, catalog: dict[str, int]
) -> None:
    scene = await _scene(pool)
    token = await _mint(api, scene, "editor")
    response = await api.get(f"/embed/seat-plan-editor?token={token}")
    html = await response.text()
    assert response.status == 200
    assert '<script type="module" src="/embed/static/editor.js"></script>' in html
    config = _config(html)
    assert config["kind"] == "editor" and config["venue"] == {"id": scene.venue_id, "name": "Sal"}
    assert set(config) == {"kind", "token", "primary_color", "venue", "plan_url", "live_url"}
    assert _csp(response.headers)["frame-ancestors"] == "'self'"


async def test_a_keys_origins_are_checked_and_written_as_browsers_send_them(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    written = ["https://Shop.Example.com/", "http://127.0.0.1:9411", "https://*.example.dk/"]
    issued = await create_key(
        pool, scene.organization_id, "shop", allowed_origins=written, metadata=TEST
    )
    assert issued.key.allowed_origins == [
        "https://shop.example.com",
        "http://127.0.0.1:9411",
        "https://*.example.dk",
    ]
    _, minted = await post(api, issued.token, PLANNER, {"event_slug": "show"}, 200)
    page = await api.get(_path(minted["embed"]["url"]))
    ancestors = _csp(page.headers)["frame-ancestors"]
    assert ancestors == " ".join(["'self'", *issued.key.allowed_origins])
    org = scene.organization_id
    for wrong in ("*", "https://shop.example.com/buy", "http://[::1]:8080", "shop.example.com"):
        with pytest.raises(ValueError, match="not an origin"):
            await create_key(pool, org, "x", allowed_origins=[wrong], metadata=TEST)


async def test_refused_tokens_and_bad_max_get_an_error_page(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    token = await _mint(api, scene)
    editor = await _mint(api, scene, "editor")
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    past = datetime.now(UTC) - timedelta(minutes=16)
    expired, _ = EmbedSigner.development().mint(
        "planner", scene.event_id, scene.organization_id, scene.key_id, past
    )
    # Signed with our secret, but for longer than we ever sign one: a leaked secret's forgery.
    lasting, _ = EmbedSigner.development().mint(
        "planner", scene.event_id, scene.organization_id, scene.key_id, past + timedelta(days=1)
    )
    cases = [
        (f"/embed/seat-planner?token={tampered}", 403),
        ("/embed/seat-planner", 403),
        (f"/embed/seat-planner?token={expired}", 401),
        (f"/embed/seat-planner?token={editor}", 403),
        (f"/embed/seat-plan-editor?token={token}", 403),
        (f"/embed/seat-planner?token={token}&max=0", 400),
        (f"/embed/seat-planner?token={token}&max=21", 400),
        (f"/embed/seat-planner?token={token}&max=two", 400),
        (f"/embed/seat-planner?token={token}&max=%C2%B2", 400),
        (f"/embed/seat-planner?token={token}&max=%EF%BC%94", 400),
        (f"/embed/seat-planner?token={token}&max={'9' * 5000}", 400),
        (f"/embed/seat-planner?token={lasting}", 403),
    ]
    for path, status in cases:
        response = await api.get(path)
        html = await response.text()
        assert response.status == status, path
        assert response.content_type == "text/html" and "linjerum-embed" not in html
        assert "Seat map unavailable" in html
    assert (await api.get(f"/embed/api/plan?token={expired}")).status == 401
    assert (await api.get(f"/embed/api/live?token={tampered}")).status == 403
    # An expired token is still the key's: the partner's page may frame why it shows nothing.
    lapsed = await api.get(f"/embed/seat-planner?token={expired}")
    assert _csp(lapsed.headers)["frame-ancestors"] == " ".join(["'self'", *ORIGINS])
    forged = await api.get(f"/embed/seat-planner?token={tampered}")
    assert _csp(forged.headers)["frame-ancestors"] == "'none'"
    # So is a token of the other kind, put in the wrong page.
    misplaced = await api.get(f"/embed/seat-planner?token={editor}")
    assert _csp(misplaced.headers)["frame-ancestors"] == " ".join(["'self'", *ORIGINS])

    await revoke_key(pool, scene.key_id, TEST)
    for _ in range(100):
        response = await api.get(f"/embed/seat-planner?token={token}")
        if response.status == 403:
            break
        await asyncio.sleep(0.02)
    assert response.status == 403 and "linjerum-embed" not in await response.text()


async def _buy(api, scene: Scene, seat_number: int) -> dict[str, Any]:
    seat = {"section_id": await _section(api, scene), "row": "A", "seat_number": seat_number}
    body = order(scene.type_id, 1, selected_seats={str(scene.type_id): [seat]})
    await post(api, scene.token, "/api/v1/purchases", body, 201)
    return seat


async def _section(api, scene: Scene) -> int:
    response = await api.get("/api/v1/events/show", headers=bearer(scene.token))
    return (await response.json())["ticket_types"][0]["section_ids"][0]


async def test_the_plan_has_the_seat_map_prices_and_sold_seats(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    token = await _mint(api, scene)
    seat = await _buy(api, scene, 7)
    await rebuild_read_models(pool)
    response = await api.get(f"/embed/api/plan?token={token}")
    plan = await response.json()
    assert response.status == 200 and response.headers["ETag"]
    assert set(plan) == {
        "venue_id",
        "event_id",
        "sections",
        "sold_seats",
        "ticket_type_section_map",
        "venue",
        "ticket_types",
        "currency",
    }
    assert plan["event_id"] == scene.event_id and plan["venue_id"] == scene.venue_id
    assert plan["sold_seats"] == [seat]
    (section,) = plan["sections"]
    assert section["rows"][0]["identifier"] == "A" and section["capacity"] == 20
    assert plan["venue"]["id"] == scene.venue_id and plan["currency"] == "DKK"
    assert plan["ticket_types"] == [
        {"id": scene.type_id, "name": "Alm", "price_cents": 10000, "section_ids": [section["id"]]}
    ]
    assert plan["ticket_type_section_map"] == {str(scene.type_id): [section["id"]]}

    editor = await (
        await api.get(f"/embed/api/plan?token={await _mint(api, scene, 'editor')}")
    ).json()
    assert (
        editor["event_id"] is None and editor["sold_seats"] == [] and editor["ticket_types"] == []
    )
    assert editor["sections"] == plan["sections"]


async def test_the_plan_shows_the_price_a_purchase_pays(api, pool: asyncpg.Pool) -> None:
    """While an early-bird price runs the planner shows it, as the preview and the purchase
    charge it, not the full price."""
    org = await new_organization(pool)
    row = venues.Row(identifier="A", start=1, end=5)
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    )
    early = c.TicketTypePlan(
        name="Alm",
        price_cents=35000,
        early_bird_price_cents=29000,
        early_bird_end_date=datetime.now(UTC) + timedelta(days=1),
    )
    await put_on_sale(pool, org, venue_id, early, TEST)
    await rebuild_read_models(pool)
    issued = await create_key(pool, org, "early", rate_limit_per_minute=10_000, metadata=TEST)
    _, minted = await post(api, issued.token, PLANNER, {"event_slug": "show"}, 200)
    plan = await (await api.get(f"/embed/api/plan?token={minted['embed']['token']}")).json()
    assert [t["price_cents"] for t in plan["ticket_types"]] == [29000]


async def _next_event(stream, deadline: float) -> tuple[str, dict[str, Any]]:
    """The next `event:`/`data:` pair of a server-sent event stream, skipping comments."""
    name = None
    async with asyncio.timeout(deadline):
        while True:
            line = (await stream.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: ") and name:
                return name, json.loads(line[len("data: ") :])


async def test_the_live_stream_sends_taken_seats_as_they_are_bought(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    token = await _mint(api, scene)
    stream = await api.get(f"/embed/api/live?token={token}")
    try:
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        assert await _next_event(stream, 5) == ("taken", {"sold_seats": []})
        seat = await _buy(api, scene, 3)
        await rebuild_read_models(pool)
        assert await _next_event(stream, 5) == ("taken", {"sold_seats": [seat]})
    finally:
        stream.close()


async def test_an_open_stream_hands_its_page_fresh_links(
    api, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_plans, "RENEW_SECONDS", 0.5)
    token = await _mint(api, scene)
    stream = await api.get(f"/embed/api/live?token={token}")
    try:
        assert (await _next_event(stream, 5))[0] == "taken"
        name, links = await _next_event(stream, 10)
    finally:
        stream.close()
    assert name == "links" and token not in links["plan_url"]
    assert links["live_url"].startswith("/embed/api/live?token=")
    plan = await api.get(links["plan_url"])
    assert plan.status == 200 and (await plan.json())["event_id"] == scene.event_id


async def test_a_revoked_keys_open_stream_ends(api, pool: asyncpg.Pool, scene: Scene) -> None:
    """A leaked key is revoked: the seat maps it opened stop being served at once, the ones
    open already too (their stream ends; the page's reconnect is refused)."""
    token = await _mint(api, scene)
    stream = await api.get(f"/embed/api/live?token={token}")
    try:
        assert await _next_event(stream, 5) == ("taken", {"sold_seats": []})
        await revoke_key(pool, scene.key_id, TEST)
        async with asyncio.timeout(10):
            while await stream.content.readline():
                pass  # pings until the stream ends
    finally:
        stream.close()
    assert (await api.get(f"/embed/api/live?token={token}")).status == 403


async def test_static_files_are_served_from_the_folder_only(api) -> None:
    missing = await api.get("/embed/static/nothing-here.js")
    assert missing.status == 404
    assert (await api.get("/embed/static/..%2Fembeds.py")).status == 404
    assert (await api.get("/embed/static/.hidden.js")).status == 404


async def test_the_openapi_document_has_the_embeds_tag_and_both_operations(api) -> None:
    document = await (await api.get("/api/v1/openapi.json")).json()
    assert {"name": "Embeds"} in document["tags"]
    for path, operation in ((PLANNER, "mint_seat_planner"), (EDITOR, "mint_seat_plan_editor")):
        assert document["paths"][path]["post"]["operationId"] == operation
        assert document["paths"][path]["post"]["tags"] == ["Embeds"]
    assert not any(path.startswith("/embed/") for path in document["paths"])


async def test_a_cancelled_events_planner_offers_no_seats(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    token = await _mint(api, scene)
    await catalog_commands.change_event_status(
        pool, scene.event_id, lambda listing: c.cancel_event(listing, "storm"), TEST
    )
    await rebuild_read_models(pool)
    page = await api.get(f"/embed/seat-planner?token={token}")
    html = await page.text()
    assert page.status == 410 and "This event is cancelled" in html
    assert "linjerum-embed" not in html
    assert _csp(page.headers)["frame-ancestors"] == " ".join(["'self'", *ORIGINS])
