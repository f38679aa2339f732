"""Buying over HTTP against the real database and the Stripe simulator: the quick start end to
end, races for the last seats, uses and places, idempotency, cancel, expiry and webhooks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import stripe

from domain import discounts
from infra import idempotency
from infra.payments import SIMULATOR_API_KEY, SIMULATOR_WEBHOOK_SECRET
from services.api.context import CLAIMANT, PURCHASES
from services.dev.stripe_webhooks import signature_header
from services.usecases import catalog_commands
from services.usecases.desk import Desk
from services.usecases.purchases import Purchases
from services.workers.sweeper import sweep_once
from tests.e2e.conftest import (
    BUYER,
    TEST,
    bearer,
    chosen_seat_order,
    claimed_by_a_killed_gateway,
    order,
    post,
    rebuild_read_models,
    seats_held,
    small_attraction,
    small_event,
)


async def _event(api, token: str, slug: str) -> dict:
    response = await api.get(f"/api/v1/events/{slug}", headers=bearer(token))
    return await response.json()


async def _paid(api, token: str, purchase: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await api.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
        body = (await response.json())["purchase"]
        if body["paid_at"]:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"purchase {purchase} never got paid")


async def _confirm(stripe_sim, intent: str) -> str:
    """The buyer pays in the browser: confirm with a test card, through the SDK."""
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(
        SIMULATOR_API_KEY,
        base_addresses={"api": str(stripe_sim.make_url("")).rstrip("/")},
        http_client=http,
    )
    try:
        confirmed = await client.v1.payment_intents.confirm_async(
            intent, {"payment_method": "pm_card_visa"}
        )
        return confirmed.status
    finally:
        await http.close_async()


async def test_quick_start_end_to_end(api, demo_token, stripe_sim, pool) -> None:
    event = await _event(api, demo_token, "hamlet-2026")
    voksen, barn = event["ticket_types"][:2]
    venue_id = event["event"]["venue"]["id"]
    plan_response = await api.get(
        f"/api/v1/venues/{venue_id}/seat-plan?event_id={event['event']['id']}",
        headers=bearer(demo_token),
    )
    plan = await plan_response.json()
    taken = {(s["section_id"], s["row"], s["seat_number"]) for s in plan["sold_seats"]}
    parterre = voksen["section_ids"][0]
    free = [n for n in range(1, 25) if (parterre, "H", n) not in taken][:3]
    seats = [{"section_id": parterre, "row": "H", "seat_number": n} for n in free]
    body = {
        "event_slug": "hamlet-2026",
        "quantities": {str(voksen["id"]): 2, str(barn["id"]): 1},
        "buyer": BUYER,
        "attendees": [
            {"ticket_type_id": voksen["id"], "index": 1, "name": "Simon", "email": BUYER["email"]},
            {"ticket_type_id": voksen["id"], "index": 2, "name": "Maja"},
        ],
        "selected_seats": {str(voksen["id"]): seats[:2], str(barn["id"]): seats[2:]},
        "discount_code": "spring25",
        "comment": "wheelchair access",
    }
    _, created = await post(api, demo_token, "/api/v1/purchases", body, 201)
    purchase, payment = created["purchase"], created["payment"]
    assert purchase["status"] == "pending_payment" and purchase["paid_at"] is None
    unit = 29000 if voksen["early_bird_active"] else 35000
    subtotal = 2 * unit + 17500
    assert purchase["subtotal_cents"] == subtotal
    assert purchase["discount_cents"] == (subtotal * 25 + 50) // 100
    assert purchase["fee_cents"] == (subtotal * 500 + 5000) // 10000
    assert (
        purchase["total_cents"]
        == purchase["amount_cents"]
        == (subtotal - purchase["discount_cents"] + purchase["fee_cents"])
    )
    assert [t["name"] for t in purchase["tickets"]] == ["Simon", "Maja", BUYER["name"]]
    assert {t["ticket_status"] for t in purchase["tickets"]} == {"pending_payment"}
    assert [t["seat"] for t in purchase["tickets"]] == seats
    assert len(purchase["tickets"][0]["ticket_code"]) == 12 and purchase["access_code"]
    assert payment["stripe_client_secret"].startswith(payment["stripe_payment_intent_id"])
    assert payment["stripe_connected_account_id"] == "acct_sim_detnyteater"
    assert payment["stripe_publishable_key"].startswith("pk_")

    assert await _confirm(stripe_sim, payment["stripe_payment_intent_id"]) == "succeeded"
    paid = await _paid(api, demo_token, purchase["token"])
    assert paid["status"] == "paid" and paid["stripe_status"] == "succeeded"
    assert {t["ticket_status"] for t in paid["tickets"]} == {"valid"}
    assert paid["event"] == {"id": event["event"]["id"], "slug": "hamlet-2026", "name": "Hamlet"}

    await rebuild_read_models(pool)
    again = await post(
        api,
        demo_token,
        "/api/v1/events/hamlet-2026/seats/validate",
        {"selected_seats": {str(voksen["id"]): seats[:1]}},
    )
    assert again[1]["available"] is False
    _, cancel = await post(
        api, demo_token, f"/api/v1/purchases/{purchase['token']}/cancel", {}, 409
    )
    assert cancel["error"] == "already_paid"


async def test_two_hundred_buyers_for_fifty_seats(serve, pool: asyncpg.Pool, catalog) -> None:
    token, event_id, type_id = await small_event(pool, 50)
    gateways = [await serve(), await serve()]

    async def buy(i: int) -> tuple[int, dict]:
        response = await gateways[i % 2].post(
            "/api/v1/purchases", json=order(type_id), headers=bearer(token)
        )
        return response.status, await response.json()

    results = await asyncio.gather(*(buy(i) for i in range(200)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 50, 409: 150}, statuses
    assert {b["error"] for s, b in results if s == 409} == {"insufficient_availability"}
    seats = [b["purchase"]["tickets"][0]["seat"]["seat_number"] for s, b in results if s == 201]
    assert sorted(seats) == list(range(1, 51))
    held = await pool.fetch(
        "SELECT data FROM events WHERE stream_id = $1 AND type = 'SeatsHeld'", f"event-{event_id}"
    )
    stored = [s["seat_number"] for r in held for s in json.loads(r["data"])["seats"]]
    assert sorted(stored) == list(range(1, 51))


async def test_last_discount_uses_are_never_exceeded(serve, pool: asyncpg.Pool, catalog) -> None:
    token, _, type_id = await small_event(pool, 60)
    org = (await pool.fetchrow("SELECT organization_id FROM api_keys ORDER BY id DESC LIMIT 1"))[0]
    await catalog_commands.create_discount_code(
        pool, org, discounts.CreateDiscountCode(code="LAST5", percentage=10, max_uses=5), TEST
    )
    gateways = [await serve(), await serve()]

    async def buy(i: int) -> tuple[int, dict]:
        response = await gateways[i % 2].post(
            "/api/v1/purchases", json=order(type_id, discount_code="LAST5"), headers=bearer(token)
        )
        return response.status, await response.json()

    results = await asyncio.gather(*(buy(i) for i in range(30)))
    assert Counter(s for s, _ in results) == {201: 5, 409: 25}
    assert {b["error"] for s, b in results if s == 409} == {"max_uses_reached"}


async def test_last_places_of_an_attraction_day(serve, pool: asyncpg.Pool, catalog) -> None:
    token, type_id = await small_attraction(pool, price=5000, daily_max=10)
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    gateways = [await serve(), await serve()]

    async def buy(i: int) -> tuple[int, dict]:
        body = {
            "attraction_slug": "museum",
            "quantities": {str(type_id): 1},
            "buyer": BUYER,
            "visit_date": day,
        }
        response = await gateways[i % 2].post("/api/v1/purchases", json=body, headers=bearer(token))
        return response.status, await response.json()

    results = await asyncio.gather(*(buy(i) for i in range(40)))
    assert Counter(s for s, _ in results) == {201: 10, 409: 30}
    assert {b["error"] for s, b in results if s == 409} == {"daily_capacity_exceeded"}
    _, missing = await post(
        gateways[0],
        token,
        "/api/v1/purchases",
        {"attraction_slug": "museum", "quantities": {str(type_id): 1}, "buyer": BUYER},
        422,
    )
    assert missing["detail"].startswith("visit_date")
    _, last_day = await post(
        gateways[0],
        token,
        "/api/v1/purchases",
        {
            "attraction_slug": "museum",
            "quantities": {str(type_id): 1},
            "buyer": BUYER,
            "visit_date": "9999-12-31",  # a ticket is valid until the day after: no such day
        },
        422,
    )
    assert last_day["detail"].startswith("visit_date")
    # Its availability answers the day as the purchase does.
    asked = await gateways[0].get(
        "/api/v1/attractions/museum/availability?date=9999-12-31", headers=bearer(token)
    )
    assert asked.status == 422 and (await asked.json())["detail"].startswith("date: ")


async def test_idempotency_keys(api, pool: asyncpg.Pool, catalog) -> None:
    token, _, type_id = await small_event(pool, 10)
    key = str(uuid.uuid4())
    first, body = await post(
        api, token, "/api/v1/purchases", order(type_id), 201, **{"Idempotency-Key": key}
    )
    again, replayed = await post(
        api, token, "/api/v1/purchases", order(type_id), 201, **{"Idempotency-Key": key}
    )
    assert replayed == body and again.headers["Idempotent-Replay"] == "true"
    assert "Idempotent-Replay" not in first.headers
    _, reuse = await post(
        api, token, "/api/v1/purchases", order(type_id, 2), 422, **{"Idempotency-Key": key}
    )
    assert reuse["error"] == "idempotency_key_reuse"
    api_key = await pool.fetchval("SELECT max(id) FROM api_keys")
    running = idempotency.request_hash(
        "POST", "/api/v1/purchases", json.dumps(order(type_id)).encode()
    )
    claimant = api.app[CLAIMANT].name  # a gateway that is alive, still running the request
    claimed = await idempotency.claim(pool, claimant, api_key, "busy", running)
    assert isinstance(claimed, idempotency.Claim) and not claimed.retaken
    _, busy = await post(
        api, token, "/api/v1/purchases", order(type_id), 409, **{"Idempotency-Key": "busy"}
    )
    assert busy["error"] == "idempotency_in_flight"
    _, long = await post(
        api, token, "/api/v1/purchases", order(type_id), 422, **{"Idempotency-Key": "k" * 256}
    )
    assert long["detail"].startswith("Idempotency-Key")


async def test_a_retry_finds_the_purchase_a_killed_gateway_stored(
    serve, pool: asyncpg.Pool, catalog
) -> None:
    token, event_id, type_id = await small_event(pool, 10)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    _, first = await post(await serve(), token, "/api/v1/purchases", order(type_id, 2), 201, **key)
    await claimed_by_a_killed_gateway(pool, key["Idempotency-Key"])
    response, again = await post(
        await serve(), token, "/api/v1/purchases", order(type_id, 2), 201, **key
    )
    assert "Idempotent-Replay" not in response.headers
    assert again["purchase"]["token"] == first["purchase"]["token"]
    assert again["payment"] == first["payment"]
    opened = await pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'PurchaseOpened' AND data->>'event_id' = $1",
        str(event_id),
    )
    assert (opened, await seats_held(pool, event_id)) == (1, 1)
    _, replayed = await post(
        await serve(), token, "/api/v1/purchases", order(type_id, 2), 201, **key
    )
    assert replayed == again


async def test_a_retry_after_an_outage_finds_the_purchase_stored_before_it(
    api, pool: asyncpg.Pool, catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away just after the purchase is stored: the buyer gets a 503 and
    retries with the same key, which must not open a second purchase."""
    token, event_id, type_id = await small_event(pool, 10)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    stored_then_cut_off = Purchases._found_again

    async def cut_off(self: Purchases, found: object, meta: object) -> None:
        await stored_then_cut_off(self, found, meta)
        raise asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )

    monkeypatch.setattr(Purchases, "_found_again", cut_off)
    _, failed = await post(api, token, "/api/v1/purchases", order(type_id, 2), 503, **key)
    assert failed["error"] == "service_unavailable"
    monkeypatch.undo()
    response, again = await post(api, token, "/api/v1/purchases", order(type_id, 2), 201, **key)
    assert "Idempotent-Replay" not in response.headers
    opened = await pool.fetch(
        "SELECT stream_id FROM events WHERE type = 'PurchaseOpened' AND data->>'event_id' = $1",
        str(event_id),
    )
    assert [r["stream_id"] for r in opened] == [f"purchase-{again['purchase']['token']}"]
    _, reuse = await post(api, token, "/api/v1/purchases", order(type_id, 3), 422, **key)
    assert reuse["error"] == "idempotency_key_reuse"


async def test_a_payment_that_could_not_start_leaves_the_key_free(
    serve, pool: asyncpg.Pool, catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purchase was opened, then Stripe failed and its hold was released: the retry under
    the key, with Stripe back, buys (a purchase of its own) rather than finding the released
    one again."""
    token, event_id, type_id = await small_event(pool, 1)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    monkeypatch.setattr(Desk, "forecast", lambda self, command: None)  # opened, then paid for
    broken = await serve(stripe_base="http://127.0.0.1:9")
    _, failed = await post(broken, token, "/api/v1/purchases", order(type_id), 502, **key)
    assert failed["error"] == "stripe_error"
    released = await pool.fetchval(
        "SELECT count(*) FROM events c JOIN events o ON o.stream_id = c.stream_id"
        " WHERE c.type = 'PurchaseCancelled' AND c.data->>'reason' = 'stripe_error'"
        " AND o.type = 'PurchaseOpened' AND o.data->>'event_id' = $1",
        str(event_id),
    )
    assert released == 1
    _, bought = await post(await serve(), token, "/api/v1/purchases", order(type_id), 201, **key)
    assert bought["payment"]["stripe_client_secret"]


async def test_a_retry_opens_the_purchase_a_killed_gateway_did_not_store(
    api, pool: asyncpg.Pool, catalog
) -> None:
    token, _, type_id = await small_event(pool, 10)
    key = str(uuid.uuid4())
    api_key = await pool.fetchval("SELECT max(id) FROM api_keys")
    body = json.dumps(order(type_id)).encode()
    fingerprint = idempotency.request_hash("POST", "/api/v1/purchases", body)
    claimed = await idempotency.claim(pool, "killed", api_key, key, fingerprint)
    assert isinstance(claimed, idempotency.Claim)
    _, created = await post(
        api, token, "/api/v1/purchases", order(type_id), 201, **{"Idempotency-Key": key}
    )
    assert created["purchase"]["token"] == claimed.reserved
    assert created["payment"]["stripe_client_secret"]


async def test_try_again_failures_are_not_replayed(api, pool: asyncpg.Pool, catalog) -> None:
    token, _, type_id = await small_event(pool, 10, stripe_account=None)
    key = str(uuid.uuid4())
    for _ in range(2):
        response, body = await post(
            api, token, "/api/v1/purchases", order(type_id), 503, **{"Idempotency-Key": key}
        )
        assert body["error"] == "payment_processing_unavailable"
        assert "Idempotent-Replay" not in response.headers
    free_token, _, free_type = await small_event(pool, 3, price=0, stripe_account=None)
    _, free = await post(api, free_token, "/api/v1/purchases", order(free_type, 3), 201)
    assert free["purchase"]["status"] == "paid" and free["payment"]["stripe_client_secret"] is None
    assert free["payment"]["stripe_publishable_key"].startswith("pk_")
    # Nothing to pay: the answer shows the tickets issued with it, as the next GET does.
    polled = await api.get(
        f"/api/v1/purchases/{free['purchase']['token']}", headers=bearer(free_token)
    )
    assert free["purchase"] == (await polled.json())["purchase"]
    assert all(t["eticket_url"] and t["scannable_until"] for t in free["purchase"]["tickets"])


async def test_stripe_failure_is_502_and_releases_the_hold(serve, pool, catalog) -> None:
    token, _, type_id = await small_event(pool, 1)
    broken = await serve(stripe_base="http://127.0.0.1:9")
    _, body = await post(broken, token, "/api/v1/purchases", order(type_id), 502)
    assert body["error"] == "stripe_error"
    working = await serve()
    await post(working, token, "/api/v1/purchases", order(type_id), 201)


async def test_cancel_frees_seats_at_once(api, pool: asyncpg.Pool, catalog) -> None:
    token, _, type_id = await small_event(pool, 1)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    await post(api, token, "/api/v1/purchases", order(type_id), 409)
    _, cancelled = await post(api, token, f"/api/v1/purchases/{purchase}/cancel", {}, 200)
    assert cancelled == {"cancelled": True, "token": purchase}
    await post(api, token, f"/api/v1/purchases/{purchase}/cancel", {}, 404)
    view = await api.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
    shown = (await view.json())["purchase"]
    assert (shown["status"], shown["stripe_status"]) == ("cancelled", "canceled")
    await post(api, token, "/api/v1/purchases", order(type_id), 201)


async def test_cancels_at_once_are_one_cancel_and_404s(api, pool: asyncpg.Pool, catalog) -> None:
    """Of several cancels of one purchase sent together, one cancels it and the others find it
    gone, as a second cancel does: none is told the service is busy (503)."""
    token, _, type_id = await small_event(pool, 8)
    for _ in range(4):  # bounded: four purchases, three cancels each at once
        _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
        path = f"/api/v1/purchases/{created['purchase']['token']}/cancel"
        answers = await asyncio.gather(
            *(api.post(path, json={}, headers=bearer(token)) for _ in range(3))
        )
        assert sorted(a.status for a in answers) == [200, 404, 404]
        ended = await pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'PurchaseCancelled'",
            f"purchase-{created['purchase']['token']}",
        )
        assert ended == 1


async def test_other_organizations_purchases_are_not_found(api, pool, catalog, demo_token) -> None:
    token, _, type_id = await small_event(pool, 2)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    response = await api.get(f"/api/v1/purchases/{purchase}", headers=bearer(demo_token))
    assert response.status == 404
    await post(api, demo_token, f"/api/v1/purchases/{purchase}/cancel", {}, 404)


async def _webhook(api, event: dict, secret: str = SIMULATOR_WEBHOOK_SECRET):
    payload = json.dumps(event)
    signature = signature_header(payload, secret, int(time.time()))
    return await api.post(
        "/api/v1/webhooks/stripe",
        data=payload,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


def _succeeded(intent_id: str, purchase: str) -> dict:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "api_version": "2024-06-20",
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "status": "succeeded",
                "amount": 10000,
                "metadata": {"purchase_token": purchase},
            }
        },
    }


async def test_webhooks_duplicated_forged_and_late(serve, pool, catalog, stripe_sim) -> None:
    token, _, type_id = await small_event(pool, 1)
    gateway = await serve(hold_minutes=0.001)
    _, created = await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    event = _succeeded(intent, purchase)

    forged = await _webhook(gateway, event, secret="whsec_wrong")
    assert forged.status == 400 and (await forged.json())["error"] == "invalid_signature"
    await rebuild_read_models(pool)
    await asyncio.sleep(0.1)
    assert await sweep_once(gateway.app[PURCHASES].endings) >= 1
    view = await (await gateway.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))).json()
    assert (view["purchase"]["status"], view["purchase"]["stripe_status"]) == (
        "expired",
        "canceled",
    )

    late = await _webhook(gateway, event)
    assert (await late.json())["outcome"] == "paid_late"
    duplicate = await _webhook(gateway, event)
    assert (await duplicate.json())["outcome"] == "duplicate"
    paid = await _paid(gateway, token, purchase)
    assert paid["tickets"][0]["ticket_status"] == "valid"

    _, other = await post(gateway, token, "/api/v1/purchases", order(type_id), 409)
    assert other["error"] == "insufficient_availability"


async def test_only_its_own_intent_for_its_total_pays_a_purchase(api, pool, catalog) -> None:
    """A Stripe report names its purchase in the intent's metadata, which can name any
    purchase: a signed report for this purchase of another purchase's intent, or of its own
    intent for another amount, pays nothing."""
    token, _, type_id = await small_event(pool, 2)
    _, first = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    _, second = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    target, total = first["purchase"]["token"], first["purchase"]["total_cents"]

    def report(intent: str, amount: int, currency: str = "dkk") -> dict:
        event = _succeeded(intent, target)
        event["data"]["object"] |= {"amount": amount, "currency": currency}
        return event

    own = first["payment"]["stripe_payment_intent_id"]
    others = second["payment"]["stripe_payment_intent_id"]
    for event in (report(others, total), report(own, 1), report(own, total, "eur")):
        assert (await (await _webhook(api, event)).json())["outcome"] == "ignored"
    view = await (await api.get(f"/api/v1/purchases/{target}", headers=bearer(token))).json()
    assert view["purchase"]["status"] == "pending_payment"
    assert (await (await _webhook(api, report(own, total))).json())["outcome"] == "paid"


async def test_a_body_or_signature_stripe_could_not_have_signed_is_a_400(api) -> None:
    """Not UTF-8, or a signature that is not ASCII: the Stripe SDK failed on them (500)."""
    stamp = int(time.time())
    for body, signature in (
        (b'{"id": "evt_\xff"}', f"t={stamp},v1=00"),
        (b'{"id": "evt_\xff"}', ""),
        (b"{}", f"t={stamp},v1=\u00e9"),
    ):
        response = await api.post(
            "/api/v1/webhooks/stripe",
            data=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == "invalid_signature"


async def test_an_expiry_gives_back_seats_held_after_the_sweeper_last_looked(
    serve, pool, catalog
) -> None:
    """The sweeper runs in a process of its own, whose sales desk read the event once: the
    holds a gateway stored since are not in what it remembers. Expiring such a purchase must
    still give its seats back (it stored PurchaseExpired alone, and the seats stayed taken)."""
    token, event_id, type_id = await small_event(pool, 3)
    sweeper = await serve(hold_minutes=0.001)
    selling = await serve(hold_minutes=0.001)
    _, early = await post(sweeper, token, "/api/v1/purchases", order(type_id), 201)
    await rebuild_read_models(pool)
    await asyncio.sleep(0.1)
    assert await sweep_once(sweeper.app[PURCHASES].endings) == 1  # its desk has read the event now
    _, late = await post(selling, token, "/api/v1/purchases", order(type_id, 2), 201)
    await rebuild_read_models(pool)
    await asyncio.sleep(0.1)
    assert await sweep_once(sweeper.app[PURCHASES].endings) == 1
    released = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'SeatsReleased'"
        " AND data->>'purchase_token' = $2",
        f"event-{event_id}",
        late["purchase"]["token"],
    )
    assert released == 1
    await post(selling, token, "/api/v1/purchases", order(type_id, 3), 201)  # all 3 free again
    assert early["purchase"]["token"] != late["purchase"]["token"]


async def test_late_payment_for_seats_sold_since_is_refunded(
    serve, pool, catalog, stripe_sim
) -> None:
    token, _, type_id = await small_event(pool, 1)
    gateway = await serve(hold_minutes=0.001)
    _, first = await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    await rebuild_read_models(pool)
    await asyncio.sleep(0.1)
    await sweep_once(gateway.app[PURCHASES].endings)
    await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    purchase = first["purchase"]["token"]
    intent = first["payment"]["stripe_payment_intent_id"]
    assert await _confirm(stripe_sim, intent) == "succeeded"
    deadline = time.monotonic() + 10
    kinds: list[str] = []
    while time.monotonic() < deadline and "LatePaymentRefundDecided" not in kinds:
        await asyncio.sleep(0.05)
        rows = await pool.fetch(
            "SELECT type FROM events WHERE stream_id = $1 ORDER BY version", f"purchase-{purchase}"
        )
        kinds = [r["type"] for r in rows]
    assert kinds[-1] == "LatePaymentRefundDecided", kinds
    # The refund itself is the payments worker's, once the decision is stored
    # (tests/e2e/test_late_payments.py): nothing is asked of Stripe on the webhook's path.
    refunds = await stripe_sim.get(f"/_sim/events?payment_intent={intent}")
    assert "charge.refunded" not in {e["type"] for e in (await refunds.json())["data"]}


MALFORMED: list[tuple[object, str]] = [
    ({}, "quantities"),
    ({"quantities": {}, "buyer": BUYER, "event_slug": "hamlet-2026"}, "quantities"),
    ({"quantities": {"1": 1}, "buyer": BUYER}, "event_slug"),
    (
        {"quantities": {"1": 1}, "buyer": BUYER, "event_slug": "a", "attraction_slug": "b"},
        "event_slug",
    ),
    ({"quantities": {"x": 1}, "buyer": BUYER, "event_slug": "hamlet-2026"}, "quantities"),
    ({"quantities": {"1": "two"}, "buyer": BUYER, "event_slug": "hamlet-2026"}, "quantities"),
    ({"quantities": {"1": -1}, "buyer": BUYER, "event_slug": "hamlet-2026"}, "quantities"),
    ({"quantities": {"1": 21}, "buyer": BUYER, "event_slug": "hamlet-2026"}, "quantities"),
    ({"quantities": {"1": 1}, "event_slug": "hamlet-2026"}, "buyer"),
    ({"quantities": {"1": 1}, "buyer": {"name": "X"}, "event_slug": "hamlet-2026"}, "buyer"),
    (
        {
            "quantities": {"1": 1},
            "buyer": {"name": "X", "email": "nope"},
            "event_slug": "hamlet-2026",
        },
        "buyer.email",
    ),
    (
        {
            "quantities": {"1": 1},
            "buyer": {"name": " ", "email": "a@b.dk"},
            "event_slug": "hamlet-2026",
        },
        "buyer.name",
    ),
    # A newline after the address ended the confirmation's To header: the rest went to its body.
    (
        {
            "quantities": {"1": 1},
            "buyer": {"name": "X", "email": "a@b.dk\n"},
            "event_slug": "hamlet-2026",
        },
        "buyer.email",
    ),
    (
        {
            "quantities": {"1": 1},
            "buyer": {"name": "X", "email": "a@b.dk", "phone": "+45 1234\r\n5678"},
            "event_slug": "hamlet-2026",
        },
        "buyer.phone",
    ),
    ({"quantities": {"1": 1}, "buyer": BUYER, "event_slug": "hamlet-2026", "extra": 1}, "extra"),
    ({"quantities": {"1": 1}, "buyer": BUYER, "event_slug": 7}, "event_slug"),
    (
        {
            "quantities": {"1": 1},
            "buyer": BUYER,
            "event_slug": "hamlet-2026",
            "attendees": [{"ticket_type_id": 1, "index": 2}],
        },
        "attendees[0]",
    ),
    (
        {"quantities": {"1": 1}, "buyer": BUYER, "event_slug": "hamlet-2026", "attendees": "x"},
        "attendees",
    ),
    (
        {
            "quantities": {"1": 1},
            "buyer": BUYER,
            "event_slug": "hamlet-2026",
            "visit_date": "2026-01-01",
        },
        "visit_date",
    ),
    (
        {"quantities": {"1": 1}, "buyer": BUYER, "event_slug": "hamlet-2026", "visit_date": "soon"},
        "visit_date",
    ),
    (
        {
            "quantities": {"1": 1},
            "buyer": BUYER,
            "event_slug": "hamlet-2026",
            "comment": "x" * 2001,
        },
        "comment",
    ),
    (
        {
            "quantities": {"1": 1},
            "buyer": BUYER,
            "event_slug": "hamlet-2026",
            "selected_seats": {"1": [{"section_id": 1}]},
        },
        "selected_seats",
    ),
    (
        {
            "quantities": {"1": 1},
            "buyer": BUYER,
            "attraction_slug": "louisiana-museum",
            "selected_seats": {"1": []},
        },
        "selected_seats",
    ),
    ({"quantities": {"abc": 1}, "buyer": BUYER, "event_slug": "hamlet-2026"}, "quantities.abc:"),
    (
        {"quantities": {"9": 1, "09": 1}, "buyer": BUYER, "event_slug": "hamlet-2026"},
        "quantities.09:",
    ),
    (
        {
            "quantities": {"1": 1},
            "buyer": BUYER,
            "event_slug": "hamlet-2026",
            "selected_seats": {"Voksen": []},
        },
        "selected_seats.Voksen:",
    ),
    ("[]", "body"),
    ("not json", "body"),
    ("", "body"),
    (
        {"quantities": {"1": 1}, "buyer": BUYER, "event_slug": "hamlet-2026", "discount_code": 25},
        "discount_code",
    ),
]


@pytest.mark.parametrize(("body", "field"), MALFORMED)
async def test_malformed_purchase_is_422_and_changes_nothing(
    api, demo_token, pool: asyncpg.Pool, body: object, field: str
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'SeatsHeld'")
    data = body if isinstance(body, str) else json.dumps(body)
    response = await api.post(
        "/api/v1/purchases",
        data=data,
        headers={**bearer(demo_token), "Content-Type": "application/json"},
    )
    payload = await response.json()
    assert response.status == 422, payload
    assert payload["error"] == "invalid_request"
    assert payload["detail"].startswith(field), payload
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'SeatsHeld'") == before


async def test_catalog_rules_are_enforced_per_ticket_type(api, demo_token) -> None:
    event = await _event(api, demo_token, "hamlet-2026")
    loge = event["ticket_types"][3]
    barn = event["ticket_types"][1]
    cases = [
        ({"quantities": {str(loge["id"]): 5}}, 422, "quantities"),
        ({"quantities": {"999999": 1}}, 422, "quantities"),
        (
            {
                "quantities": {str(barn["id"]): 1},
                "selected_seats": {
                    str(barn["id"]): [
                        {"section_id": loge["section_ids"][0], "row": "A", "seat_number": 1}
                    ]
                },
            },
            422,
            "selected_seats",
        ),
        ({"quantities": {str(barn["id"]): 1}, "discount_code": "NOPE"}, 422, "discount_code"),
        ({"quantities": {str(barn["id"]): 1}, "discount_code": "VINTER10"}, 422, "discount_code"),
    ]
    for extra, status, field in cases:
        body = {"event_slug": "hamlet-2026", "buyer": BUYER, **extra}
        _, payload = await post(api, demo_token, "/api/v1/purchases", body, status)
        assert payload["detail"].startswith(field), payload
    _, closed = await post(
        api,
        demo_token,
        "/api/v1/purchases",
        {
            "event_slug": "kirsebaerhaven",
            "buyer": BUYER,
            "quantities": {
                str((await _event(api, demo_token, "kirsebaerhaven"))["ticket_types"][0]["id"]): 1
            },
        },
        422,
    )
    assert "not started" in closed["detail"]
    _, draft = await post(
        api, demo_token, "/api/v1/purchases", order(1) | {"event_slug": "maagen"}, 404
    )
    assert draft["error"] == "not_found"


async def test_webhooks_out_of_order_change_nothing_after_payment(api, pool, catalog) -> None:
    token, _, type_id = await small_event(pool, 2)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    assert (await (await _webhook(api, _succeeded(intent, purchase))).json())["outcome"] == "paid"
    for kind in ("payment_intent.payment_failed", "payment_intent.canceled"):
        late = _succeeded(intent, purchase) | {"type": kind}
        assert (await (await _webhook(api, late)).json())["outcome"] == "ignored"
    view = await api.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
    assert (await view.json())["purchase"]["status"] == "paid"


async def test_a_seat_bought_or_given_back_is_shown_so_at_once(
    api, pool: asyncpg.Pool, catalog
) -> None:
    """Right after a purchase's 201 its seat is taken for validate, availability and the seat
    plan, and right after its cancel it is free again in all three: they read the seats as the
    gateway's sales desk stored them, not only the read model, which follows a moment later."""
    token, event_id, type_id = await small_event(pool, 4)
    await rebuild_read_models(pool)  # the event listed; no projector runs in these tests
    listing = await _event(api, token, "show")
    plan_path = f"/api/v1/venues/{listing['event']['venue']['id']}/seat-plan?event_id={event_id}"
    chosen = await chosen_seat_order(pool, event_id, type_id, 2)
    seat = chosen["selected_seats"][str(type_id)][0]

    async def shown() -> tuple[bool, bool, bool, int]:
        selection = {"selected_seats": {str(type_id): [seat]}}
        _, checked = await post(api, token, "/api/v1/events/show/seats/validate", selection, 200)
        available = await api.get("/api/v1/events/show/availability", headers=bearer(token))
        plan = await api.get(plan_path, headers=bearer(token))
        now, sold = await available.json(), (await plan.json())["sold_seats"]
        left = now["ticket_types"][str(type_id)]
        return checked["available"], seat in now["sold_seats"], seat in sold, left

    assert await shown() == (True, False, False, 4)
    for _ in range(3):
        _, created = await post(api, token, "/api/v1/purchases", chosen, 201)
        assert await shown() == (False, True, True, 3)
        purchase = created["purchase"]["token"]
        await post(api, token, f"/api/v1/purchases/{purchase}/cancel", {}, 200)
        assert await shown() == (True, False, False, 4)


async def test_a_cancelled_purchases_seats_are_suggested_again_at_once(
    api, pool: asyncpg.Pool, catalog
) -> None:
    """Auto-select offers a cancelled purchase's seats right after the cancel's 200, as
    availability and validate show them free, though the read model still has them held."""
    token, _, type_id = await small_event(pool, 2)
    await rebuild_read_models(pool)
    suggest = {"ticket_type_id": type_id, "count": 2}
    path = "/api/v1/events/show/seats/auto-select"
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, 2), 201)
    await rebuild_read_models(pool)  # the read model has the seats held from here on
    _, none_left = await post(api, token, path, suggest, 200)
    assert (none_left["count"], none_left["seats"]) == (0, [])
    await post(api, token, f"/api/v1/purchases/{created['purchase']['token']}/cancel", {}, 200)
    _, offered = await post(api, token, path, suggest, 200)
    assert offered["count"] == 2
    assert {tuple(s.values()) for s in offered["seats"]} == {
        tuple(t["seat"].values()) for t in created["purchase"]["tickets"]
    }


async def test_an_attraction_place_bought_or_given_back_counts_at_once(
    api, pool: asyncpg.Pool, catalog
) -> None:
    """The attraction's availability for the day counts the places right after the purchase's
    201 and gives them back right after its cancel, as the sales desk stored them (no projector
    runs in these tests: the read model never moves on its own)."""
    token, type_id = await small_attraction(pool, price=5000, daily_max=10)
    await rebuild_read_models(pool)
    day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    body = {"attraction_slug": "museum", "quantities": {str(type_id): 2}, "buyer": BUYER}

    async def left() -> tuple[int, int]:
        that_day = await api.get(
            f"/api/v1/attractions/museum/availability?date={day}", headers=bearer(token)
        )
        shown = await that_day.json()
        return shown["date_remaining"], shown["ticket_types"][str(type_id)]

    before = await left()
    assert before == (10, 10)
    for _ in range(2):
        _, created = await post(api, token, "/api/v1/purchases", {**body, "visit_date": day}, 201)
        assert await left() == (8, 8)
        purchase = created["purchase"]["token"]
        await post(api, token, f"/api/v1/purchases/{purchase}/cancel", {}, 200)
        assert await left() == before


async def test_a_blank_discount_code_is_no_code_and_an_unknown_one_a_422(
    api, pool: asyncpg.Pool, catalog
) -> None:
    """A shop's discount field left empty, or holding spaces, is sent as it is: no code, as the
    pricing preview takes it; a code that exists nowhere is refused."""
    token, _, type_id = await small_event(pool, 4)
    for blank in ("", "   "):
        _, bought = await post(
            api, token, "/api/v1/purchases", order(type_id, discount_code=blank), 201
        )
        assert bought["purchase"]["discount_cents"] == 0
    _, refused = await post(
        api, token, "/api/v1/purchases", order(type_id, discount_code="NOPE"), 422
    )
    assert refused["error"] == "invalid_discount_code"
