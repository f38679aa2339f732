"""The checkout summary over HTTP: the pricing preview with the spec's numbers, discount codes
applied or silently left out, the explicit validation with each of its reasons and its own
20/min bucket, and that neither endpoint locks, counts or records anything."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from domain import catalog as c
from domain import discounts
from services.dev.demo_catalog import DEMO_ORGANIZATION
from services.usecases import catalog_commands
from tests.e2e.conftest import (
    TEST,
    bearer,
    issue_key,
    koncert,
    new_organization,
    rebuild_read_models,
)

PREVIEW = "/api/v1/pricing/preview"
VALIDATE = "/api/v1/discount-codes/validate"
BUYER = {"name": "Maja Holm", "email": "maja@example.com"}


@pytest.fixture
async def token(pool: asyncpg.Pool, catalog: dict[str, int]) -> str:
    """A demo organization key per test: validate's 20/min bucket is per key, and the tests
    here call it often enough to share one."""
    return await issue_key(pool, catalog[DEMO_ORGANIZATION])


async def _post(api: TestClient, token: str, path: str, body: Any, status: int = 200) -> Any:
    response = await api.post(path, json=body, headers=bearer(token))
    payload = await response.json()
    assert response.status == status, payload
    return payload


async def _types(api: TestClient, token: str, path: str) -> dict[str, dict[str, Any]]:
    """The product's ticket types by name, as GET /events/:slug or /attractions/:slug serves
    them: the prices a preview must use."""
    response = await api.get(path, headers=bearer(token))
    assert response.status == 200
    return {t["name"]: t for t in (await response.json())["ticket_types"]}


def _unit(ticket_type: dict[str, Any]) -> int:
    if ticket_type.get("early_bird_active"):
        return ticket_type["early_bird_price_cents"]
    return ticket_type["price_cents"]


def _half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


async def test_the_spec_example_with_spring25(api, token) -> None:
    voksen = (await _types(api, token, "/api/v1/events/hamlet-2026"))["Voksen"]
    body = {
        "event_slug": "hamlet-2026",
        "quantities": {str(voksen["id"]): 2},
        "discount_code": "SPRING25",
    }
    unit = _unit(voksen)
    subtotal = 2 * unit
    discount = _half_up(subtotal * 25, 100)
    fee = _half_up(subtotal * 500, 10_000)
    assert await _post(api, token, PREVIEW, body) == {
        "pricing": {
            "subtotal_cents": subtotal,
            "discount_cents": discount,
            "fee_cents": fee,
            "total_cents": subtotal - discount + fee,
            "currency": "DKK",
            "line_items": [
                {
                    "ticket_type_id": voksen["id"],
                    "ticket_type_name": "Voksen",
                    "quantity": 2,
                    "unit_price_cents": unit,
                    "line_total_cents": subtotal,
                    "is_early_bird": unit != voksen["price_cents"],
                }
            ],
            "discount": {"code": "SPRING25", "percentage": 25, "amount_cents": None},
        }
    }
    if unit == 35000:
        assert (subtotal, discount, fee) == (70000, 17500, 3500)


async def test_the_spec_numbers_on_a_type_without_early_bird(api, token) -> None:
    """Pensionist has no early-bird price, so the numbers are fixed: the spec's arithmetic."""
    types = await _types(api, token, "/api/v1/events/hamlet-2026")
    senior, barn = types["Pensionist"], types["Barn"]
    body = {
        "event_slug": "hamlet-2026",
        "quantities": {str(barn["id"]): 0, str(senior["id"]): 2},
        "discount_code": "  spring25 ",
    }
    pricing = (await _post(api, token, PREVIEW, body))["pricing"]
    assert (
        pricing["subtotal_cents"],
        pricing["discount_cents"],
        pricing["fee_cents"],
        pricing["total_cents"],
    ) == (50000, 12500, 2500, 40000)
    assert [line["ticket_type_id"] for line in pricing["line_items"]] == [senior["id"]]
    assert pricing["discount"]["code"] == "SPRING25"


async def test_a_fixed_amount_code(api, token) -> None:
    barn = (await _types(api, token, "/api/v1/events/hamlet-2026"))["Barn"]
    body = {
        "event_slug": "hamlet-2026",
        "quantities": {str(barn["id"]): 1},
        "discount_code": "fast50",
    }
    pricing = (await _post(api, token, PREVIEW, body))["pricing"]
    assert pricing["subtotal_cents"] == 17500
    assert pricing["discount_cents"] == 5000
    assert pricing["fee_cents"] == 875
    assert pricing["total_cents"] == 17500 - 5000 + 875
    assert pricing["discount"] == {"code": "FAST50", "percentage": None, "amount_cents": 5000}


async def test_unusable_codes_are_silently_left_out(api, token) -> None:
    barn = (await _types(api, token, "/api/v1/events/hamlet-2026"))["Barn"]
    for code in ("NOPE", "VINTER10", "SOMMER10", "", "no such code!"):
        body = {
            "event_slug": "hamlet-2026",
            "quantities": {str(barn["id"]): 2},
            "discount_code": code,
        }
        pricing = (await _post(api, token, PREVIEW, body))["pricing"]
        assert pricing["discount"] is None, code
        assert pricing["discount_cents"] == 0
        assert pricing["total_cents"] == 35000 + 1750
    # A string PostgreSQL cannot hold is refused at the edge, as in every body.
    body["discount_code"] = "a\u0000b"
    refused = await _post(api, token, PREVIEW, body, 422)
    assert refused["detail"].startswith("discount_code: "), refused


async def test_an_attraction_preview(api, token) -> None:
    types = await _types(api, token, "/api/v1/attractions/louisiana-museum")
    voksen, student = types["Voksen"], types["Studerende"]
    body = {
        "attraction_slug": "louisiana-museum",
        "quantities": {str(voksen["id"]): 2, str(student["id"]): 1},
        "discount_code": "SPRING25",
    }
    pricing = (await _post(api, token, PREVIEW, body))["pricing"]
    subtotal = 2 * voksen["price_cents"] + student["price_cents"]
    assert pricing["subtotal_cents"] == subtotal == 41000
    assert pricing["discount_cents"] == 10250
    assert pricing["fee_cents"] == 2050
    assert pricing["total_cents"] == 41000 - 10250 + 2050
    assert [(line["ticket_type_name"], line["quantity"]) for line in pricing["line_items"]] == [
        ("Voksen", 2),
        ("Studerende", 1),
    ]
    # The purchase's body with its visit: "the rest of the flow is identical".
    visiting = {**body, "visit_date": (date.today() + timedelta(days=3)).isoformat()}
    assert (await _post(api, token, PREVIEW, visiting))["pricing"] == pricing
    bad_day = await _post(api, token, PREVIEW, {**body, "visit_date": "someday"}, 422)
    assert bad_day["detail"].startswith("visit_date")
    validated = await _post(
        api, token, VALIDATE, {"attraction_slug": "louisiana-museum", "code": "spring25"}
    )
    assert validated["valid"] is True


async def test_validate_returns_the_terms(api, token) -> None:
    found = await _post(api, token, VALIDATE, {"event_slug": "hamlet-2026", "code": " Spring25"})
    assert set(found) == {"valid", "discount"} and found["valid"] is True
    terms = found["discount"]
    uses = terms.pop("current_uses")
    valid_until = terms.pop("valid_until")
    assert terms == {
        "code": "SPRING25",
        "percentage": 25,
        "amount_cents": None,
        "applies_to_all": True,
        "ticket_type_ids": [],
        "valid_from": None,
        "max_uses": 500,
    }
    assert isinstance(uses, int) and 0 <= uses < 500
    assert valid_until.endswith("Z")
    assert datetime.fromisoformat(valid_until) > datetime.now(UTC)
    fast = await _post(api, token, VALIDATE, {"event_slug": "hamlet-2026", "code": "FAST50"})
    assert fast["discount"]["amount_cents"] == 5000 and fast["discount"]["percentage"] is None


async def test_each_reason_of_an_invalid_code(api, token) -> None:
    for code, reason in (
        ("NOPE", "not_found"),
        ("", "not_found"),
        ("SOMMER10", "not_yet_valid"),
        ("vinter10", "expired"),
    ):
        answer = await _post(api, token, VALIDATE, {"event_slug": "hamlet-2026", "code": code})
        assert answer == {"valid": False, "reason": reason}, code
    nul = {"event_slug": "hamlet-2026", "code": "a\u0000b"}
    assert (await _post(api, token, VALIDATE, nul, 422))["detail"].startswith("code: ")


async def test_a_code_for_another_events_ticket_type_is_invalid_here(
    api, token, pool: asyncpg.Pool, catalog: dict[str, int]
) -> None:
    hamlet = await _types(api, token, "/api/v1/events/hamlet-2026")
    cherry = (await _types(api, token, "/api/v1/events/kirsebaerhaven"))["Voksen"]
    code = f"CHERRY-{uuid.uuid4().hex[:6].upper()}"
    await catalog_commands.create_discount_code(
        pool,
        catalog[DEMO_ORGANIZATION],
        discounts.CreateDiscountCode(
            code=code, percentage=20, applies_to_all=False, ticket_type_ids=[cherry["id"]]
        ),
        TEST,
    )
    await rebuild_read_models(pool)
    here = await _post(api, token, VALIDATE, {"event_slug": "hamlet-2026", "code": code})
    assert here == {"valid": False, "reason": "invalid_code"}
    there = await _post(api, token, VALIDATE, {"event_slug": "kirsebaerhaven", "code": code})
    assert there["valid"] is True and there["discount"]["ticket_type_ids"] == [cherry["id"]]
    body = {
        "event_slug": "hamlet-2026",
        "quantities": {str(hamlet["Barn"]["id"]): 1},
        "discount_code": code,
    }
    assert (await _post(api, token, PREVIEW, body))["pricing"]["discount"] is None


async def _scene_with_code(pool: asyncpg.Pool, code: str, max_uses: int) -> tuple[str, int]:
    """A fresh organization (5% plus 1.00 a ticket) selling one standing event, with a code of
    `max_uses`: its API key and id."""
    org = await new_organization(
        pool,
        stripe_account="acct_sim_scene",
        currency="EUR",
        fee=c.FeeRule(percent_bps=500, per_ticket_cents=100),
    )
    await koncert(pool, org, 100)
    await catalog_commands.create_discount_code(
        pool, org, discounts.CreateDiscountCode(code=code, percentage=10, max_uses=max_uses), TEST
    )
    await rebuild_read_models(pool)
    return await issue_key(pool, org), org


async def _uses(pool: asyncpg.Pool, organization_id: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT current_uses FROM rm_catalog.discount_codes WHERE organization_id = $1",
        organization_id,
    )
    return [r[0] for r in rows]


async def test_a_used_up_code_and_a_released_use(api, pool: asyncpg.Pool, catalog) -> None:
    """Validate says max_uses_reached (and the preview leaves the code out) the moment the only
    use is taken, and offers the code again the moment that purchase is cancelled: no
    projector runs here, so both count the uses where the purchase decided them; the read
    model counts the same once it has caught up."""
    token, org = await _scene_with_code(pool, "ONCE", max_uses=1)
    floor = (await _types(api, token, "/api/v1/events/koncert"))["Gulv"]
    basket = {"event_slug": "koncert", "quantities": {str(floor["id"]): 3}}
    fresh = await _post(api, token, VALIDATE, {"event_slug": "koncert", "code": "once"})
    assert fresh["valid"] is True and fresh["discount"]["current_uses"] == 0
    preview = (await _post(api, token, PREVIEW, {**basket, "discount_code": "ONCE"}))["pricing"]
    assert (preview["subtotal_cents"], preview["discount_cents"], preview["fee_cents"]) == (
        30000,
        3000,
        1500 + 300,
    )
    assert preview["currency"] == "EUR"

    bought = await _post(
        api, token, "/api/v1/purchases", {**basket, "buyer": BUYER, "discount_code": "ONCE"}, 201
    )
    charged = bought["purchase"]
    for field in ("subtotal_cents", "discount_cents", "fee_cents", "total_cents"):
        assert charged[field] == preview[field], field
    spent = await _post(api, token, VALIDATE, {"event_slug": "koncert", "code": "ONCE"})
    assert spent == {"valid": False, "reason": "max_uses_reached"}
    again = (await _post(api, token, PREVIEW, {**basket, "discount_code": "ONCE"}))["pricing"]
    assert again["discount"] is None and again["discount_cents"] == 0
    await rebuild_read_models(pool)
    assert await _uses(pool, org) == [1]

    await _post(api, token, f"/api/v1/purchases/{charged['token']}/cancel", {})
    back = await _post(api, token, VALIDATE, {"event_slug": "koncert", "code": "ONCE"})
    assert back["valid"] is True and back["discount"]["current_uses"] == 0
    offered = (await _post(api, token, PREVIEW, {**basket, "discount_code": "ONCE"}))["pricing"]
    assert offered["discount_cents"] == 3000
    await rebuild_read_models(pool)
    assert await _uses(pool, org) == [0]


async def test_validate_has_its_own_20_per_minute_bucket(serve, token) -> None:
    """A gateway of its own, so no other test's calls are in its windows."""
    gateway = await serve()
    body = {"event_slug": "hamlet-2026", "code": "SPRING25"}
    cap = (await gateway.get("/api/v1/organization", headers=bearer(token))).headers
    for i in range(20):
        response = await gateway.post(VALIDATE, json=body, headers=bearer(token))
        assert response.status == 200, i
        # The headers are the key's own limit, as the spec has them: the bucket's is its own.
        assert response.headers["X-RateLimit-Limit"] == cap["X-RateLimit-Limit"]
        left = int(cap["X-RateLimit-Remaining"]) - 1 - i
        assert response.headers["X-RateLimit-Remaining"] == str(left)
    refused = await gateway.post(VALIDATE, json=body, headers=bearer(token))
    assert refused.status == 429
    assert await refused.json() == {"error": "rate_limited"}
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Still the key's own cap, as the spec defines the header: the bucket says when in Retry-After.
    assert (refused.headers["X-RateLimit-Limit"], refused.headers["X-RateLimit-Remaining"]) == (
        cap["X-RateLimit-Limit"],
        "0",
    )
    voksen = (await _types(gateway, token, "/api/v1/events/hamlet-2026"))["Voksen"]
    preview = {"event_slug": "hamlet-2026", "quantities": {str(voksen["id"]): 1}}
    for _ in range(5):
        assert (await gateway.post(PREVIEW, json=preview, headers=bearer(token))).status == 200


async def test_bad_bodies_are_422_naming_the_field(api, token) -> None:
    types = await _types(api, token, "/api/v1/events/hamlet-2026")
    barn, loge = str(types["Barn"]["id"]), str(types["Loge"]["id"])
    cherry = (await _types(api, token, "/api/v1/events/kirsebaerhaven"))["Voksen"]["id"]
    hamlet = {"event_slug": "hamlet-2026"}
    voksen, senior = str(types["Voksen"]["id"]), str(types["Pensionist"]["id"])
    twenty_one = {barn: 8, loge: 4, voksen: 8, senior: 1}  # each type within its own cap
    cases: list[tuple[str, Any, str]] = [
        (PREVIEW, hamlet, "quantities"),
        (
            PREVIEW,
            {**hamlet, "attraction_slug": "louisiana-museum", "quantities": {barn: 1}},
            "event_slug",
        ),
        (PREVIEW, {"quantities": {barn: 1}}, "event_slug"),
        (PREVIEW, {**hamlet, "quantities": {str(cherry): 1}}, f"quantities.{cherry}"),
        (PREVIEW, {**hamlet, "quantities": {"999999": 1}}, "quantities.999999"),
        (PREVIEW, {**hamlet, "quantities": {"abc": 1}}, "quantities.abc"),
        (PREVIEW, {**hamlet, "quantities": {barn: -1, loge: 2}}, f"quantities.{barn}"),
        (PREVIEW, {**hamlet, "quantities": twenty_one}, "quantities:"),
        (PREVIEW, {**hamlet, "quantities": {barn: 21}}, "quantities:"),
        (PREVIEW, {**hamlet, "quantities": {}}, "quantities:"),
        (PREVIEW, {**hamlet, "quantities": {loge: 5}}, f"quantities.{loge}"),
        (PREVIEW, {**hamlet, "quantities": {barn: "1"}}, "quantities"),
        (PREVIEW, {**hamlet, "quantities": {barn: 1}, "discount": "SPRING25"}, "discount"),
        (VALIDATE, hamlet, "code"),
        (VALIDATE, {"code": "SPRING25"}, "event_slug"),
        (VALIDATE, {**hamlet, "code": 25}, "code"),
    ]
    for path, body, field in cases:
        answer = await _post(api, token, path, body, 422)
        assert answer["error"] == "invalid_request", body
        assert answer["detail"].startswith(field), (body, answer)
    for path in (PREVIEW, VALIDATE):
        for raw in (b"{not json", b""):
            response = await api.post(
                path, data=raw, headers={**bearer(token), "Content-Type": "application/json"}
            )
            assert response.status == 422
            assert (await response.json())["detail"].startswith("body")


async def test_a_purchases_body_is_previewed_as_it_is(api, token) -> None:
    """A shop may send the body it will buy with: the buyer, attendees, chosen seats and comment
    change no price and are left out, not refused."""
    barn = str((await _types(api, token, "/api/v1/events/hamlet-2026"))["Barn"]["id"])
    basket = {"event_slug": "hamlet-2026", "quantities": {barn: 2}, "discount_code": "SPRING25"}
    alone = (await _post(api, token, PREVIEW, basket))["pricing"]
    whole = {
        **basket,
        "buyer": BUYER,
        "attendees": [{"ticket_type_id": int(barn), "index": 0, "name": "Bo"}],
        "selected_seats": {barn: []},
        "comment": "by the aisle",
    }
    assert (await _post(api, token, PREVIEW, whole))["pricing"] == alone


async def test_another_organizations_event_is_not_found(api, token, aarhus_token) -> None:
    barn = (await _types(api, token, "/api/v1/events/hamlet-2026"))["Barn"]
    preview = {"event_slug": "hamlet-2026", "quantities": {str(barn["id"]): 1}}
    validate = {"event_slug": "hamlet-2026", "code": "SPRING25"}
    for path, body in ((PREVIEW, preview), (VALIDATE, validate)):
        assert await _post(api, aarhus_token, path, body, 404) == {
            "error": "not_found",
            "detail": "event not found",
        }
    for caller, body in (
        (token, {"event_slug": "no-such-show", "code": "SPRING25"}),
        (token, {"event_slug": "maagen", "code": "SPRING25"}),
        (token, {"attraction_slug": "no-such-museum", "code": "SPRING25"}),
        (aarhus_token, {"attraction_slug": "louisiana-museum", "code": "SPRING25"}),
    ):
        assert (await _post(api, caller, VALIDATE, body, 404))["error"] == "not_found", body


async def test_nothing_is_locked_counted_or_recorded(api, token, pool) -> None:
    """Previews and validations write no event and move no use count, however many there are."""
    voksen = (await _types(api, token, "/api/v1/events/hamlet-2026"))["Voksen"]
    availability = await (
        await api.get("/api/v1/events/hamlet-2026/availability", headers=bearer(token))
    ).json()
    events = await pool.fetchval("SELECT count(*) FROM events")
    uses = await pool.fetch("SELECT code, current_uses FROM rm_catalog.discount_codes ORDER BY id")
    for code in ("SPRING25", "FAST50", "NOPE", "VINTER10"):
        body = {
            "event_slug": "hamlet-2026",
            "quantities": {str(voksen["id"]): 8},
            "discount_code": code,
        }
        await _post(api, token, PREVIEW, body)
        await _post(api, token, VALIDATE, {"event_slug": "hamlet-2026", "code": code})
    assert await pool.fetchval("SELECT count(*) FROM events") == events
    assert (
        await pool.fetch("SELECT code, current_uses FROM rm_catalog.discount_codes ORDER BY id")
        == uses
    )
    after = await (
        await api.get("/api/v1/events/hamlet-2026/availability", headers=bearer(token))
    ).json()
    assert after == availability


async def test_a_cancelled_events_basket_is_refused_as_its_purchase_is(api, token) -> None:
    [ticket_type, *_] = (await _types(api, token, "/api/v1/events/aflyst-gala")).values()
    body = {"event_slug": "aflyst-gala", "quantities": {str(ticket_type["id"]): 1}}
    refused = await _post(api, token, PREVIEW, body, 422)
    assert refused == {"error": "invalid_request", "detail": "event_slug: the event is cancelled"}
    bought = await api.post(
        "/api/v1/purchases", json={**body, "buyer": BUYER}, headers=bearer(token)
    )
    assert (await bought.json())["detail"] == refused["detail"]
