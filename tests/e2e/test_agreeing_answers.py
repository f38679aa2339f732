"""Answers that agree with each other, over HTTP: what availability and the seat pre-check say
is what the purchase then decides, a weak or listed ETag is a 304, a too-long text is called
too long, an attraction ticket scans until its day ends where the museum is, and the buyer
lookup answers every order status as the spec says."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from domain import catalog as c
from domain import venues
from services.usecases import catalog_commands
from tests.e2e.conftest import (
    BUYER,
    TEST,
    bearer,
    buyer_bundle,
    first_ticket_type,
    issue_key,
    koncert,
    new_organization,
    order,
    post,
    rebuild_read_models,
    small_event,
)

ZONE = "America/New_York"
DAILY_MAX = 3


def _day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), clock(), tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
async def museum(pool: asyncpg.Pool) -> dict:
    """An organization in New York with a dated museum, closed on the weekday of `closed`,
    open on `open`, whose ticket types hold more than its daily cap of three."""
    closed = datetime.now(UTC).date() + timedelta(days=7)
    slug = f"moma-{uuid.uuid4().hex[:8]}"
    org = await catalog_commands.register_organization(
        pool,
        c.RegisterOrganization(
            slug=slug, name=slug, currency="USD", stripe_account_id="acct_sim_x", timezone=ZONE
        ),
        TEST,
    )
    venue_id = await catalog_commands.register_venue(
        pool,
        org,
        venues.RegisterVenue(
            key="moma",
            name="MoMA",
            address="11 W 53rd St",
            city="New York",
            zip_code="10019",
            sections=[
                venues.SectionPlan(
                    name="Hall",
                    seating_mode="standing",
                    width=1.0,
                    height=1.0,
                    standing_capacity=500,
                )
            ],
        ),
        TEST,
    )
    hours = c.OpeningHours(open="10:00", close="18:00")
    attraction_id = await catalog_commands.open_attraction(
        pool,
        org,
        c.OpenAttraction(
            slug="museum",
            name="Museum",
            venue_id=venue_id,
            visit_date_required=True,
            daily_max_tickets=DAILY_MAX,
            opening_hours={d: hours for d in c.WEEKDAYS if d != c.WEEKDAYS[closed.weekday()]},
            ticket_types=[
                c.TicketTypePlan(name="Gratis", price_cents=0, capacity=100),
                c.TicketTypePlan(name="Voksen", price_cents=2500, capacity=100),
            ],
        ),
        TEST,
    )
    free = await first_ticket_type(pool, f"attraction-{attraction_id}")
    await rebuild_read_models(pool)
    return {
        "token": await issue_key(pool, org),
        "free": free,
        "paid": free + 1,
        "closed": closed,
        "open": closed + timedelta(days=1),
    }


def _visit(type_id: int, day: date, n: int = 1) -> dict:
    return {
        "attraction_slug": "museum",
        "quantities": {str(type_id): n},
        "buyer": BUYER,
        "visit_date": day.isoformat(),
    }


async def _availability(api, token: str, day: date) -> dict:
    response = await api.get(
        f"/api/v1/attractions/museum/availability?date={day.isoformat()}", headers=bearer(token)
    )
    body = await response.json()
    assert response.status == 200, body
    return body


async def test_a_closed_or_past_day_is_not_offered_and_the_purchase_agrees(api, museum) -> None:
    token = museum["token"]
    past = datetime.now(UTC).date() - timedelta(days=2)
    for day, status in ((museum["closed"], "closed"), (past, "sales_ended")):
        shown = await _availability(api, token, day)
        assert (shown["status"], shown["date_remaining"]) == (status, 0), shown
        assert set(shown["ticket_types"].values()) == {0}
        _, refused = await post(api, token, "/api/v1/purchases", _visit(museum["free"], day), 422)
        assert refused["detail"].startswith("visit_date"), refused
    shown = await _availability(api, token, museum["open"] + timedelta(days=7))
    assert (shown["status"], shown["date_remaining"]) == ("available", DAILY_MAX)


async def test_a_sold_out_day_shows_no_type_above_what_the_day_has_left(api, pool, museum) -> None:
    token, day = museum["token"], museum["open"]
    await post(api, token, "/api/v1/purchases", _visit(museum["free"], day, 2), 201)
    await rebuild_read_models(pool)
    shown = await _availability(api, token, day)
    assert shown["date_remaining"] == 1
    assert shown["ticket_types"] == {str(museum["free"]): 1, str(museum["paid"]): 1}
    await post(api, token, "/api/v1/purchases", _visit(museum["free"], day), 201)
    await rebuild_read_models(pool)
    shown = await _availability(api, token, day)
    assert (shown["status"], shown["date_remaining"]) == ("sold_out", 0)
    assert set(shown["ticket_types"].values()) == {0}
    _, refused = await post(api, token, "/api/v1/purchases", _visit(museum["paid"], day), 409)
    assert refused["error"] == "daily_capacity_exceeded"


async def test_an_attraction_ticket_scans_until_its_day_ends_in_the_organizations_zone(
    api, pool, stripe_sim, museum
) -> None:
    token, day = museum["token"], museum["open"] + timedelta(days=1)
    _, free = await post(api, token, "/api/v1/purchases", _visit(museum["free"], day), 201)
    _, paid = await post(api, token, "/api/v1/purchases", _visit(museum["paid"], day), 201)
    intent = paid["payment"]["stripe_payment_intent_id"]
    succeeded = await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")
    assert succeeded.status == 200, await succeeded.text()
    deadline = time.monotonic() + 10
    while not await _is_paid(api, token, paid["purchase"]["token"]):
        assert time.monotonic() < deadline, "the purchase never got paid"
        await asyncio.sleep(0.05)
    await rebuild_read_models(pool)
    for created in (free, paid):
        response = await api.get(
            f"/api/v1/purchases/{created['purchase']['token']}", headers=bearer(token)
        )
        purchase = (await response.json())["purchase"]
        until = purchase["tickets"][0]["scannable_until"]
        assert until is not None and _instant(until) == _day_end(day), purchase


async def _is_paid(api, token: str, purchase: str) -> bool:
    response = await api.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
    return bool((await response.json())["purchase"]["paid_at"])


async def test_a_seat_listed_twice_gets_the_purchases_verdict_from_validate(api, pool) -> None:
    token, _, type_id = await small_event(pool, 4)
    await rebuild_read_models(pool)
    seat = {"section_id": None, "row": "A", "seat_number": 2}
    event = await (await api.get("/api/v1/events/show", headers=bearer(token))).json()
    seat["section_id"] = event["ticket_types"][0]["section_ids"][0]
    selection = {str(type_id): [seat, seat]}
    _, checked = await post(
        api, token, "/api/v1/events/show/seats/validate", {"selected_seats": selection}, 422
    )
    _, bought = await post(
        api, token, "/api/v1/purchases", order(type_id, 2, selected_seats=selection), 422
    )
    assert checked == bought
    assert checked["detail"].startswith(f"selected_seats.{type_id}[1]"), checked


@pytest.mark.parametrize(
    "sent",
    ["W/{tag}", '"nope", W/{tag}', '"nope",{tag}', "*", ' W/{tag} , "x"'],
)
async def test_weak_and_listed_etags_are_honoured(api, demo_token, sent: str) -> None:
    path = "/api/v1/events/hamlet-2026/availability"
    first = await api.get(path, headers=bearer(demo_token))
    tag = first.headers["ETag"]
    again = await api.get(
        path, headers={**bearer(demo_token), "If-None-Match": sent.format(tag=tag)}
    )
    assert again.status == 304 and again.headers["ETag"] == tag
    other = await api.get(path, headers={**bearer(demo_token), "If-None-Match": 'W/"nope"'})
    assert other.status == 200


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"buyer": BUYER | {"name": "A" * 201}}, "buyer.name"),
        ({"buyer": BUYER | {"email": "a" * 250 + "@x.dk"}}, "buyer.email"),
        ({"buyer": BUYER | {"phone": "1" * 41}}, "buyer.phone"),
        ({"comment": "c" * 2001}, "comment"),
        (
            {"attendees": [{"ticket_type_id": 0, "index": 1, "name": "A" * 201}]},
            "attendees[0].name",
        ),
    ],
)
async def test_a_text_over_its_limit_is_called_too_long(
    api, demo_token, changes: dict, field: str
) -> None:
    body = order(0, event_slug="hamlet-2026") | changes
    _, refused = await post(api, demo_token, "/api/v1/purchases", body, 422)
    assert refused["error"] == "invalid_request"
    assert refused["detail"].startswith(f"{field}: ") and "too long" in refused["detail"]
    _, blank = await post(
        api,
        demo_token,
        "/api/v1/purchases",
        order(0, event_slug="hamlet-2026") | {"buyer": BUYER | {"name": " "}},
        422,
    )
    assert blank["detail"] == "buyer.name: buyer name is required"


# ---- the buyer API -------------------------------------------------------------------------


async def _theatre_event(pool: asyncpg.Pool) -> tuple[str, int, datetime]:
    """An event at a venue with an address: (API key, ticket type, start)."""
    slug = f"teater-{uuid.uuid4().hex[:8]}"
    org = await catalog_commands.register_organization(
        pool,
        c.RegisterOrganization(
            slug=slug, name=slug, currency="DKK", stripe_account_id="acct_sim_x"
        ),
        TEST,
    )
    row = venues.Row(identifier="A", start=1, end=10)
    venue_id = await catalog_commands.register_venue(
        pool,
        org,
        venues.RegisterVenue(
            key="dnt",
            name="Det Ny Teater",
            address="Gothersgade 8",
            city="København",
            zip_code="1123",
            sections=[venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])],
        ),
        TEST,
    )
    venue = await catalog_commands.load_venue(pool, venue_id)
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    event_id = await catalog_commands.schedule_event(
        pool,
        org,
        c.ScheduleEvent(
            slug="show",
            name="Show",
            venue_id=venue_id,
            event_date=starts,
            publish=True,
            ticket_types=[
                c.TicketTypePlan(name="Alm", price_cents=10000, section_ids=[venue.sections[0].id])
            ],
        ),
        TEST,
    )
    return await issue_key(pool, org), await first_ticket_type(pool, f"event-{event_id}"), starts


async def test_the_buyer_lookup_answers_every_order_status_alike(api, pool) -> None:
    token, type_id, starts = await _theatre_event(pool)
    _, pending = await post(api, token, "/api/v1/purchases", order(type_id, 2), 201)
    _, doomed = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    await post(api, token, f"/api/v1/purchases/{doomed['purchase']['token']}/cancel", {}, 200)
    await rebuild_read_models(pool)
    for created, status in ((pending, "pending_payment"), (doomed, "cancelled")):
        purchase = created["purchase"]
        bundle = await buyer_bundle(api, token, purchase)
        assert bundle["order"]["status"] == status
        assert bundle["order"]["lookup"] == min(t["id"] for t in purchase["tickets"])
        (line,) = bundle["lines"]
        assert _instant(line["event"]["startsAt"]) == starts
        assert line["event"]["location"] == "Det Ny Teater, Gothersgade 8, 1123 København"
        assert {s["ticket_code"] for s in line["seats"]} == {
            t["ticket_code"] for t in purchase["tickets"]
        }
    edits = {
        "email": BUYER["email"],
        "seats": [{"token": "tok_" + "0" * 32, "name": "A", "email": None}],
    }
    for created, code in ((pending, "not_yet_paid"), (doomed, "order_inactive")):
        response = await api.patch(
            f"/api/v1/tickets/{created['purchase']['access_code']}",
            json=edits,
            headers=bearer(token),
        )
        assert response.status == 409 and (await response.json())["error"] == code


async def test_standing_places_given_back_count_free_at_once(api, pool) -> None:
    """The event's page and its availability counted a standing type by the larger of the
    read model's count and the selling desk's: places a cancel gave back a moment ago stayed
    taken (and a type sold out stayed `sold_out`) until the read model caught up."""
    org = await new_organization(pool)
    type_id = await koncert(pool, org, 4)
    await rebuild_read_models(pool)
    token = await issue_key(pool, org)
    _, bought = await post(
        api, token, "/api/v1/purchases", order(type_id, 4, event_slug="koncert"), 201
    )
    await rebuild_read_models(pool)  # the read model counts the 4 taken; it moves no more here
    await post(api, token, f"/api/v1/purchases/{bought['purchase']['token']}/cancel", None, 200)
    shown = await api.get("/api/v1/events/koncert/availability", headers=bearer(token))
    body = await shown.json()
    assert (body["status"], body["ticket_types"][str(type_id)]) == ("available", 4), body
    page = await api.get("/api/v1/events/koncert", headers=bearer(token))
    assert (await page.json())["ticket_types"][0]["available"] == 4
