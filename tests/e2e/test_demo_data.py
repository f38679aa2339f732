"""The demo data reaches the paths the spec describes: a free event paid at once, an
organization without Stripe refused with 503, and a museum whose day sells out before its
ticket types do. Each is used the way a developer trying `make run` would, with a key of the
organization (as `linjerum keys create --org SLUG` issues)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from services.dev.demo_catalog import FREE_EVENT, NO_STRIPE_ORGANIZATION
from services.usecases.catalog_commands import organization_id_by_slug
from tests.e2e.conftest import BUYER, bearer, issue_key, post, rebuild_read_models


async def _types(api, token: str, path: str) -> dict[str, int]:
    response = await api.get(path, headers=bearer(token))
    body = await response.json()
    assert response.status == 200, body
    return {t["name"]: t["id"] for t in body["ticket_types"]}


async def test_the_free_event_is_paid_at_once(api, aarhus_token: str) -> None:
    types = await _types(api, aarhus_token, f"/api/v1/events/{FREE_EVENT}")
    body = {"event_slug": FREE_EVENT, "quantities": {str(types["Gratis"]): 2}, "buyer": BUYER}
    _, created = await post(api, aarhus_token, "/api/v1/purchases", body, 201)
    assert created["purchase"]["status"] == "paid"
    assert created["payment"]["stripe_client_secret"] is None
    assert len(created["purchase"]["tickets"]) == 2
    assert created["purchase"]["total_cents"] == 0


async def test_the_organization_without_stripe_cannot_take_payment(
    api, pool: asyncpg.Pool, catalog
) -> None:
    org = await organization_id_by_slug(pool, NO_STRIPE_ORGANIZATION)
    assert org is not None
    token = await issue_key(pool, org)
    types = await _types(api, token, "/api/v1/events/koncert-friscenen")
    body = {
        "event_slug": "koncert-friscenen",
        "quantities": {str(types["Ståplads"]): 1},
        "buyer": BUYER,
    }
    _, refused = await post(api, token, "/api/v1/purchases", body, 503)
    assert refused["error"] == "payment_processing_unavailable"


async def test_the_museums_daily_capacity_is_what_refuses(
    api, pool: asyncpg.Pool, demo_token: str
) -> None:
    path = "/api/v1/attractions/louisiana-museum"
    types = await _types(api, demo_token, path)
    voksen, student = str(types["Voksen"]), str(types["Studerende"])
    day = datetime.now(UTC).date() + timedelta(days=150)
    day += timedelta(days=(2 - day.weekday()) % 7)  # a Wednesday: open
    order = {
        "attraction_slug": "louisiana-museum",
        "buyer": BUYER,
        "visit_date": day.isoformat(),
    }
    full = {**order, "quantities": {voksen: 10, student: 10}}
    results = await asyncio.gather(
        *(post(api, demo_token, "/api/v1/purchases", full, 201) for _ in range(15))
    )
    assert len(results) == 15  # 300 places: the day's capacity
    _, refused = await post(
        api, demo_token, "/api/v1/purchases", {**order, "quantities": {voksen: 1}}, 409
    )
    assert refused["error"] == "daily_capacity_exceeded"
    await rebuild_read_models(pool)
    response = await api.get(f"{path}/availability", headers=bearer(demo_token))
    stock = (await response.json())["ticket_types"]
    assert stock[voksen] >= 999 - 150 - 52 and stock[student] >= 500 - 150  # types not sold out
