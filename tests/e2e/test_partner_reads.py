"""Every read endpoint of the partner API over HTTP: the spec's shapes, organization scoping,
event status, availability that follows holds, and 422s that name the field."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from domain import catalog as c
from domain import venues
from domain.inventory.events import AttractionTicketsHeld, HeldSeat, SeatsHeld
from infra.eventstore import ANY_VERSION, PendingAppend, append
from services.usecases import catalog_commands
from tests.e2e.conftest import (
    TEST,
    bearer,
    issue_key,
    order,
    post,
    rebuild_read_models,
    small_attraction,
    small_event,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def _get(api, token: str, path: str, status: int = 200, **kwargs) -> dict:
    response = await api.get(path, headers=bearer(token), **kwargs)
    body = await response.json()
    assert response.status == status, body
    return body


async def test_organization_is_the_keys_own(api, demo_token, aarhus_token) -> None:
    body = await _get(api, demo_token, "/api/v1/organization")
    assert body == {
        "organization": {
            "id": body["organization"]["id"],
            "name": "Det Ny Teater",
            "description": "Klassiske og moderne forestillinger i hjertet af København.",
            "image_url": "https://cdn.linjerum.com/orgs/det-ny-teater.png",
            "primary_color": "#3B82F6",
            "currency": "DKK",
        }
    }
    other = await _get(api, aarhus_token, "/api/v1/organization")
    assert other["organization"]["name"] == "Aarhus Teater"


async def test_events_lists_upcoming_published_events_by_date(api, demo_token) -> None:
    body = await _get(api, demo_token, "/api/v1/events")
    slugs = [e["slug"] for e in body["events"]]
    assert slugs == ["hamlet-2026", "kirsebaerhaven"]
    assert body["count"] == 2
    hamlet = body["events"][0]
    assert set(hamlet) == {
        "id",
        "slug",
        "name",
        "event_date",
        "event_end_date",
        "sales_start_date",
        "sales_end_date",
        "venue",
    }
    assert ISO_Z.match(hamlet["event_date"])
    assert hamlet["venue"] == {
        "id": hamlet["venue"]["id"],
        "name": "Det Ny Teater",
        "city": "København",
    }
    limited = await _get(api, demo_token, "/api/v1/events", params={"limit": "1"})
    assert [e["slug"] for e in limited["events"]] == ["hamlet-2026"]


@pytest.mark.parametrize("limit", ["abc", "0", "101", "-3", "1.5"])
async def test_bad_limit_is_422_naming_the_field(api, demo_token, limit: str) -> None:
    body = await _get(api, demo_token, "/api/v1/events", 422, params={"limit": limit})
    assert body["error"] == "invalid_request"
    assert body["detail"].startswith("limit")


async def test_event_detail_has_ticket_types_with_stock_and_early_bird(api, demo_token) -> None:
    body = await _get(api, demo_token, "/api/v1/events/hamlet-2026")
    event = body["event"]
    assert event["status"] == "available"
    assert event["currency"] == "DKK"
    assert set(event["venue"]) == {"id", "name", "address", "city", "zip_code"}
    assert event["doors_open"] < event["event_date"]
    voksen, barn = body["ticket_types"][:2]
    assert (voksen["name"], voksen["price_cents"], barn["name"], barn["price_cents"]) == (
        "Voksen",
        35000,
        "Barn",
        17500,
    )
    assert voksen["early_bird_price_cents"] == 29000 and voksen["early_bird_active"] is True
    assert barn["early_bird_active"] is False and barn["early_bird_price_cents"] is None
    snapshot = await _get(api, demo_token, "/api/v1/events/hamlet-2026/availability")
    taken = sum(1 for seat in snapshot["sold_seats"] if seat["section_id"] in voksen["section_ids"])
    assert voksen["available"] == 16 * 24 + 6 * 30 - taken
    assert set(voksen) == {
        "id",
        "name",
        "description",
        "price_cents",
        "currency",
        "early_bird_price_cents",
        "early_bird_end_date",
        "early_bird_active",
        "category",
        "max_per_purchase",
        "section_ids",
        "available",
    }


@pytest.mark.parametrize(
    ("slug", "status"), [("kirsebaerhaven", "sales_not_started"), ("aflyst-gala", "cancelled")]
)
async def test_event_status_follows_sales_window_and_cancellation(
    api, demo_token, slug: str, status: str
) -> None:
    body = await _get(api, demo_token, f"/api/v1/events/{slug}")
    assert body["event"]["status"] == status


async def test_drafts_and_other_organizations_are_not_found(api, demo_token, aarhus_token) -> None:
    for token, path in [
        (demo_token, "/api/v1/events/maagen"),
        (demo_token, "/api/v1/events/en-folkefjende"),
        (aarhus_token, "/api/v1/events/hamlet-2026"),
        (aarhus_token, "/api/v1/events/hamlet-2026/availability"),
        (aarhus_token, "/api/v1/attractions/louisiana-museum"),
        (demo_token, "/api/v1/events/no-such-event"),
    ]:
        body = await _get(api, token, path, 404)
        assert body["error"] == "not_found"
    demo_venue = (await _get(api, demo_token, "/api/v1/venues"))["venues"][0]["id"]
    assert (await _get(api, aarhus_token, f"/api/v1/venues/{demo_venue}", 404))["error"] == (
        "not_found"
    )


async def _seat_map(api, token: str) -> dict:
    venue_id = (await _get(api, token, "/api/v1/venues"))["venues"][0]["id"]
    event_id = (await _get(api, token, "/api/v1/events/hamlet-2026"))["event"]["id"]
    return await _get(api, token, f"/api/v1/venues/{venue_id}/seat-plan?event_id={event_id}")


async def test_venues_and_seat_plan(api, demo_token) -> None:
    listed = await _get(api, demo_token, "/api/v1/venues")
    theatre = listed["venues"][0]
    assert theatre["seated_capacity"] == 840 and theatre["standing_capacity"] == 0
    assert listed["count"] == len(listed["venues"]) == 2
    single = await _get(api, demo_token, f"/api/v1/venues/{theatre['id']}")
    assert single == {"venue": theatre}
    plan = await _seat_map(api, demo_token)
    kinds = {s["section_type"] for s in plan["sections"]}
    assert kinds == {"rectangle", "arc"}
    arc = next(s for s in plan["sections"] if s["section_type"] == "arc")
    assert arc["inner_radius"] < arc["outer_radius"] and arc["start_angle"] is not None
    assert arc["rows"][0] == {
        "identifier": "A",
        "start": 1,
        "end": 20,
        "row_offset_x": 0.0,
        "row_position_y": 0.0,
    }
    assert len(plan["ticket_type_section_map"]) == 4
    assert all(isinstance(ids, list) for ids in plan["ticket_type_section_map"].values())


async def test_seat_plan_parameters_are_checked(api, demo_token) -> None:
    venue_id = (await _get(api, demo_token, "/api/v1/venues"))["venues"][0]["id"]
    missing = await _get(api, demo_token, f"/api/v1/venues/{venue_id}/seat-plan", 422)
    assert missing["detail"].startswith("event_id")
    bad = await _get(api, demo_token, "/api/v1/venues/abc/seat-plan?event_id=1", 422)
    assert bad["detail"].startswith("id")
    louisiana = (await _get(api, demo_token, "/api/v1/venues"))["venues"][1]["id"]
    event_id = (await _get(api, demo_token, "/api/v1/events/hamlet-2026"))["event"]["id"]
    await _get(api, demo_token, f"/api/v1/venues/{louisiana}/seat-plan?event_id={event_id}", 404)
    # Every id a bigint holds names a venue that may not exist; past it, no id at all.
    await _get(api, demo_token, f"/api/v1/venues/{2**63 - 1}", 404)
    await _get(api, demo_token, f"/api/v1/venues/{2**63 - 1}/seat-plan?event_id={event_id}", 404)
    assert (await _get(api, demo_token, f"/api/v1/venues/{2**63}", 422))["detail"].startswith("id")


async def test_availability_follows_holds_and_answers_304_while_unchanged(
    api, demo_token, pool: asyncpg.Pool
) -> None:
    event = await _get(api, demo_token, "/api/v1/events/hamlet-2026")
    voksen = event["ticket_types"][0]
    first = await api.get("/api/v1/events/hamlet-2026/availability", headers=bearer(demo_token))
    before = await first.json()
    etag = first.headers["ETag"]
    assert before["status"] == "available"
    assert before["ticket_types"][str(voksen["id"])] == voksen["available"]
    again = await api.get(
        "/api/v1/events/hamlet-2026/availability",
        headers={**bearer(demo_token), "If-None-Match": etag},
    )
    assert again.status == 304 and await again.read() == b""

    section = voksen["section_ids"][0]
    seats = [
        HeldSeat(section_id=section, row="A", seat_number=n, ticket_type_id=voksen["id"])
        for n in (5, 6)
    ]
    held = SeatsHeld(
        event_id=event["event"]["id"],
        purchase_token="test-hold",
        seats=seats,
        counts={voksen["id"]: 2},
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
    )
    await append(pool, [PendingAppend(f"event-{held.event_id}", ANY_VERSION, [held])], TEST)
    await rebuild_read_models(pool)

    changed = await api.get(
        "/api/v1/events/hamlet-2026/availability",
        headers={**bearer(demo_token), "If-None-Match": etag},
    )
    after = await changed.json()
    assert changed.status == 200 and changed.headers["ETag"] != etag
    assert after["ticket_types"][str(voksen["id"])] == voksen["available"] - 2
    assert {"section_id": section, "row": "A", "seat_number": 5} in after["sold_seats"]
    plan = await _seat_map(api, demo_token)
    assert {"section_id": section, "row": "A", "seat_number": 6} in plan["sold_seats"]


async def test_the_gateway_selling_an_event_shows_its_holds_before_the_read_model(
    pool: asyncpg.Pool, serve
) -> None:
    """No projector runs here: the read model never moves until the test rebuilds it. The
    gateway whose desk held the seats shows them taken, and the event sold out, at once; a
    gateway that sells nothing of the event answers from the read model."""
    token, _, type_id = await small_event(pool, 2)
    await rebuild_read_models(pool)
    seller, reader = await serve(), await serve()
    assert (await _get(seller, token, "/api/v1/events/show/availability"))["status"] == "available"

    await post(seller, token, "/api/v1/purchases", order(type_id, 2), 201)
    sold = await _get(seller, token, "/api/v1/events/show/availability")
    assert sold["status"] == "sold_out" and sold["ticket_types"] == {str(type_id): 0}
    assert [s["seat_number"] for s in sold["sold_seats"]] == [1, 2]
    event = await _get(seller, token, "/api/v1/events/show")
    assert event["event"]["status"] == "sold_out" and event["ticket_types"][0]["available"] == 0
    behind = await _get(reader, token, "/api/v1/events/show/availability")
    assert behind["status"] == "available" and behind["sold_seats"] == []

    await rebuild_read_models(pool)
    caught_up = await _get(reader, token, "/api/v1/events/show/availability")
    assert caught_up["status"] == "sold_out" and len(caught_up["sold_seats"]) == 2


async def test_attractions_and_daily_capacity(api, demo_token, pool: asyncpg.Pool) -> None:
    listing = await _get(api, demo_token, "/api/v1/attractions")
    assert listing["count"] == 1
    assert await _get(api, demo_token, "/api/v1/attractions", params={"limit": "1"}) == listing
    for limit in ("0", "101", "many"):
        refused = await _get(api, demo_token, "/api/v1/attractions", 422, params={"limit": limit})
        assert refused["detail"].startswith("limit")
    museum = listing["attractions"][0]
    assert museum["slug"] == "louisiana-museum" and museum["daily_max_tickets"] == 300
    assert museum["venue"]["city"] == "Humlebæk"
    detail = await _get(api, demo_token, "/api/v1/attractions/louisiana-museum")
    assert detail["attraction"]["visit_date_required"] is True
    assert detail["attraction"]["opening_hours"]["sat"] == {"open": "11:00", "close": "18:00"}
    types = detail["ticket_types"]
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    held = AttractionTicketsHeld(
        attraction_id=museum["id"],
        purchase_token="museum-hold",
        visit_date=day,
        counts={types[0]["id"]: 52},
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
    )
    await append(pool, [PendingAppend(f"attraction-{museum['id']}", ANY_VERSION, [held])], TEST)
    await rebuild_read_models(pool)
    # Held by another process than this gateway's sales desk, which may sell the museum
    # already (other tests bought there): told within DESK_IN_STEP_SECONDS.
    for _ in range(40):
        body = await _get(
            api,
            demo_token,
            "/api/v1/attractions/louisiana-museum/availability",
            params={"date": day.isoformat()},
        )
        if body["date_remaining"] == 248:
            break
        await asyncio.sleep(0.05)
    assert body["date"] == day.isoformat() and body["date_remaining"] == 248
    assert body["daily_max_tickets"] == 300 and body["status"] == "available"
    plain = await _get(api, demo_token, "/api/v1/attractions/louisiana-museum/availability")
    assert "date_remaining" not in plain and "date" not in plain
    # Asked for a date, an attraction with no daily cap says so: the field is there, null.
    token, _ = await small_attraction(pool, price=100, daily_max=None)
    await rebuild_read_models(pool)
    uncapped = await _get(
        api, token, "/api/v1/attractions/museum/availability", params={"date": day.isoformat()}
    )
    assert (uncapped["date"], uncapped["date_remaining"]) == (day.isoformat(), None)
    assert uncapped["daily_max_tickets"] is None
    bad = await _get(
        api,
        demo_token,
        "/api/v1/attractions/louisiana-museum/availability",
        422,
        params={"date": "tomorrow"},
    )
    assert bad["detail"].startswith("date")


async def test_sold_out_and_sales_ended(api, pool: asyncpg.Pool, catalog) -> None:
    org = await catalog_commands.register_organization(
        pool, c.RegisterOrganization(slug="lille-scene", name="Lille Scene", currency="EUR"), TEST
    )
    venue_id = await catalog_commands.register_venue(
        pool,
        org,
        venues.RegisterVenue(
            key="kaelder",
            name="Kælderen",
            sections=[
                venues.SectionPlan(
                    name="Sal",
                    width=10.0,
                    height=10.0,
                    rows=[venues.Row(identifier="A", start=1, end=2)],
                )
            ],
        ),
        TEST,
    )
    venue = await catalog_commands.load_venue(pool, venue_id)
    now = datetime.now(UTC)
    section = venue.sections[0].id

    async def schedule(slug: str, sales_end: datetime) -> int:
        return await catalog_commands.schedule_event(
            pool,
            org,
            c.ScheduleEvent(
                slug=slug,
                name=slug,
                venue_id=venue_id,
                event_date=now + timedelta(days=5),
                sales_end_date=sales_end,
                publish=True,
                ticket_types=[c.TicketTypePlan(name="Alm", price_cents=0, section_ids=[section])],
            ),
            TEST,
        )

    full = await schedule("udsolgt", now + timedelta(days=4))
    await schedule("slut", now - timedelta(hours=1))
    await rebuild_read_models(pool)
    types = await _ticket_type_ids(pool, full)
    seats = [
        HeldSeat(section_id=section, row="A", seat_number=n, ticket_type_id=types[0])
        for n in (1, 2)
    ]
    held = SeatsHeld(
        event_id=full,
        purchase_token="all",
        seats=seats,
        counts={types[0]: 2},
        expires_at=now + timedelta(minutes=30),
    )
    await append(pool, [PendingAppend(f"event-{full}", ANY_VERSION, [held])], TEST)
    await rebuild_read_models(pool)
    token = await issue_key(pool, org)
    sold_out = await _get(api, token, "/api/v1/events/udsolgt/availability")
    assert sold_out["status"] == "sold_out" and sold_out["ticket_types"] == {str(types[0]): 0}
    assert (await _get(api, token, "/api/v1/events/slut"))["event"]["status"] == "sales_ended"


async def _ticket_type_ids(pool: asyncpg.Pool, event_id: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT id FROM rm_catalog.ticket_types WHERE event_id = $1 ORDER BY display_order",
        event_id,
    )
    return [r["id"] for r in rows]
