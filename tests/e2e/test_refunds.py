"""Refunds over HTTP against the real database and the Stripe simulator: a partner refunds part
of a purchase and then the rest (Idempotency-Key replayed, seats free at once, the discount
use back, exactly one Stripe refund per decision with the transfer reversed, an e-mail each);
refunds made in Stripe's dashboard and disputes arrive by webhook and are applied once; buyers'
refund requests are approved or declined; a refund racing a scan or an in-flight payment
leaves one consistent outcome; and every read model rebuilt afterwards equals the live one."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from pypdf import PdfReader

from domain import catalog as c
from domain import discounts, venues
from domain.seating import TakenSeats
from infra.global_order import read_all
from infra.payments import (
    SIMULATOR_API_KEY,
    SIMULATOR_PUBLISHABLE_KEY,
    SIMULATOR_WEBHOOK_SECRET,
    Payments,
)
from infra.tickets_pdf import format_money
from projections.framework import apply_batch, live_schema, read_checkpoint
from projections.payment_effects import PaymentEffectsProjection
from projections.rebuild import rebuild
from projections.refund_requests import RefundRequestsProjection
from projections.registry import all_projections
from services.api.context import PURCHASES
from services.dev.sample_event import put_on_sale
from services.usecases import catalog_commands
from services.usecases.refunds import Refunds
from services.usecases.ticket_documents import Documents
from services.workers.payment_effects import PaymentEffects
from tests.e2e.conftest import (
    BUYER,
    TEST,
    bearer,
    buyer_bundle,
    claimed_by_a_killed_gateway,
    issue_key,
    order,
    post,
    rebuild_read_models,
    redeliver,
    signed_webhook,
    venue_with,
)

WAIT_SECONDS = 10


async def _until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Polls `check` until it answers something true, for at most WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def _rebuilt(pool: asyncpg.Pool) -> None:
    """The read models brought up to everything stored so far."""
    await _settled(pool)
    await rebuild_read_models(pool)


async def _settled(pool: asyncpg.Pool) -> None:
    """Until everything stored so far can be read in order: replays read only what no open
    transaction (a webhook still being applied) can overtake."""
    newest = await pool.fetchval("SELECT max(tx_id)::text FROM events")

    async def settled() -> bool:
        return await pool.fetchval(
            "SELECT $1::text::xid8 < pg_snapshot_xmin(pg_current_snapshot())", newest
        )

    await _until(settled, "everything stored settled")


async def _event(
    pool: asyncpg.Pool,
    seats: int,
    *,
    fee: c.FeeRule | None = None,
    refund_service_fee: bool = True,
    discount: str | None = None,
) -> tuple[str, int, int]:
    """A fresh organization selling one row of `seats` seats at 100 kr.: (key, event, type)."""
    slug = f"refunds-{uuid.uuid4().hex[:8]}"
    org = await catalog_commands.register_organization(
        pool,
        c.RegisterOrganization(
            slug=slug,
            name=slug,
            currency="DKK",
            stripe_account_id="acct_sim_refunds",
            fee=fee or c.FeeRule(),
            refund_service_fee=refund_service_fee,
        ),
        TEST,
    )
    row = venues.Row(identifier="A", start=1, end=seats)
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=10000, max_per_purchase=20)
    event_id, type_id = await put_on_sale(pool, org, venue_id, plan, TEST)
    if discount is not None:
        await catalog_commands.create_discount_code(
            pool, org, discounts.CreateDiscountCode(code=discount, percentage=10, max_uses=1), TEST
        )
    return await issue_key(pool, org), event_id, type_id


async def _purchase(api: TestClient, key: str, token: str) -> dict:
    response = await api.get(f"/api/v1/purchases/{token}", headers=bearer(key))
    assert response.status == 200, await response.text()
    return (await response.json())["purchase"]


async def _bought(
    api: TestClient, sim: TestClient, key: str, type_id: int, n: int, **extra: object
) -> dict:
    """A purchase of `n` seats, paid at the simulator, once its webhook made it paid."""
    _, created = await post(api, key, "/api/v1/purchases", order(type_id, n, **extra), 201)
    token = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    paid = await sim.post(f"/_sim/payment_intents/{intent}/succeed")
    assert paid.status == 200, await paid.text()

    async def is_paid() -> dict | None:
        purchase = await _purchase(api, key, token)
        return purchase if purchase["status"] == "paid" else None

    purchase = await _until(is_paid, f"{token} paid")
    return purchase | {"intent": intent}


async def _refund(
    api: TestClient, key: str, token: str, body: dict | None, status: int, **headers: str
) -> dict:
    # No body at all (None): as curl sends it, without a Content-Type.
    response = await api.post(
        f"/api/v1/purchases/{token}/refund",
        json=body,
        headers={**bearer(key), **headers},
        skip_auto_headers=("Content-Type",) if body is None else (),
    )
    payload = await response.json()
    assert response.status == status, payload
    return payload


async def _kinds(pool: asyncpg.Pool, stream: str) -> Counter[str]:
    rows = await pool.fetch("SELECT type FROM events WHERE stream_id = $1", stream)
    return Counter(r["type"] for r in rows)


async def _sim_refunds(sim: TestClient, intent: str) -> list[dict]:
    response = await sim.get(f"/_sim/refunds?payment_intent={intent}")
    return (await response.json())["data"]


async def _sim_event(sim: TestClient, intent: str, kind: str, nth: int = 0) -> dict:
    async def found() -> dict | None:
        response = await sim.get(f"/_sim/events?payment_intent={intent}")
        events = [e for e in (await response.json())["data"] if e["type"] == kind]
        return events[nth] if len(events) > nth else None

    return await _until(found, f"{kind} of {intent}")


def _payments(sim: TestClient) -> Payments:
    return Payments(
        SIMULATOR_API_KEY,
        api_base=str(sim.make_url("")).rstrip("/"),
        publishable_key=SIMULATOR_PUBLISHABLE_KEY,
        webhook_secret=SIMULATOR_WEBHOOK_SECRET,
    )


@pytest.fixture
async def effects(pool: asyncpg.Pool, stripe_sim: TestClient) -> AsyncIterator[PaymentEffects]:
    payments = _payments(stripe_sim)
    yield PaymentEffects(pool, payments)
    await payments.close()


async def _make_refunds(pool: asyncpg.Pool, effects: PaymentEffects, token: str, n: int) -> None:
    """What the projector and the payments worker do in `linjerum run`: queue the stored
    refund decisions, then make them at Stripe, until `n` of the purchase's are done."""

    async def done() -> bool:
        await rebuild(pool, PaymentEffectsProjection())
        for _ in range(20):
            if not await effects.work_due():
                break
        finished = await pool.fetchval(
            "SELECT count(*) FROM payment_outbox WHERE purchase_token = $1"
            " AND kind = 'ticket_refund' AND done_at IS NOT NULL",
            token,
        )
        return finished >= n

    await _until(done, f"{n} refunds of {token} made")


async def _desk_taken(api: TestClient, event_id: int) -> set[int]:
    """The seats the event's sales desk holds now (what a purchase is decided against)."""
    taken = await api.app[PURCHASES].seats.taken(event_id, TakenSeats.of(()), 0)
    return {number for _, _, number in taken}


async def test_a_refund_of_part_then_the_rest_of_a_purchase(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool, effects: PaymentEffects
) -> None:
    key, event_id, type_id = await _event(
        pool, 3, fee=c.FeeRule(per_ticket_cents=1000), discount="BACK10"
    )
    bought = await _bought(api, stripe_sim, key, type_id, 3, discount_code="BACK10")
    token, intent = bought["token"], bought["intent"]
    assert bought["total_cents"] == 30000 - 3000 + 3000
    second = bought["tickets"][1]
    headers = {"Idempotency-Key": f"refund-{token}"}
    body = {"ticket_ids": [second["id"]], "reason": "ill"}

    refunded = await _refund(api, key, token, body, 201, **headers)
    refund = refunded["refund"]
    # 100 kr. less its 10 kr. share of the discount, plus its 10 kr. fee.
    assert (refund["amount_cents"], refund["ticket_ids"]) == (10000, [second["id"]])
    assert (refund["status"], refund["reason"], refund["by"]) == ("pending", "ill", "partner")
    replay = await api.post(
        f"/api/v1/purchases/{token}/refund", json=body, headers={**bearer(key), **headers}
    )
    assert replay.headers.get("Idempotent-Replay") == "true"
    assert replay.status == 201 and await replay.json() == refunded
    await _refund(api, key, token, {"ticket_ids": []}, 422, **headers)  # the key's other body
    assert (await _kinds(pool, f"purchase-{token}"))["RefundDecided"] == 1

    # At once: the gate, the ticket's PDF and the sales desk.
    seat = second["seat"]["seat_number"]
    assert seat not in await _desk_taken(api, event_id)
    verify = await api.get(f"/api/v1/tickets/{second['ticket_code']}/verify", headers=bearer(key))
    assert (await verify.json())["reason"] == "refunded"
    _, scanned = await post(api, key, f"/api/v1/tickets/{second['ticket_code']}/scan", {}, 200)
    assert (scanned["valid"], scanned["reason"]) == (False, "refunded")
    pdf = await api.get(
        f"/api/v1/purchases/{token}/tickets/{second['id']}/pdf", headers=bearer(key)
    )
    assert (pdf.status, (await pdf.json())["error"]) == (409, "ticket_refunded")
    whole_pdf = await api.get(f"/api/v1/purchases/{token}/tickets/pdf", headers=bearer(key))
    assert whole_pdf.status == 200
    again = await _refund(api, key, token, {"ticket_ids": [second["id"]]}, 409)
    assert again["error"] == "already_refunded"

    # Once projected: availability and auto-select offer the seat.
    await _rebuilt(pool)
    availability = await api.get("/api/v1/events/show/availability", headers=bearer(key))
    shown = await availability.json()
    assert shown["ticket_types"] == {str(type_id): 1}, shown
    assert seat not in {s["seat_number"] for s in shown["sold_seats"]}
    _, chosen = await post(
        api, key, "/api/v1/events/show/seats/auto-select", {"ticket_type_id": type_id, "count": 1}
    )
    assert [s["seat_number"] for s in chosen["seats"]] == [seat]

    await _make_refunds(pool, effects, token, 1)
    [made] = await _sim_refunds(stripe_sim, intent)
    assert made["amount"] == 10000 and made["transfer_reversal"] is not None
    listed = await api.get(f"/api/v1/purchases/{token}/refunds", headers=bearer(key))
    [shown_refund] = (await listed.json())["refunds"]
    assert (shown_refund["status"], shown_refund["stripe_refund_id"]) == ("succeeded", made["id"])

    rest = (await _refund(api, key, token, None, 201))["refund"]
    assert rest["amount_cents"] == 20000 and len(rest["ticket_ids"]) == 2
    assert await _desk_taken(api, event_id) == set()
    assert (await _purchase(api, key, token))["refunded_cents"] == 30000
    # The discount's one use is back: the code sells again.
    again_bought = await _bought(api, stripe_sim, key, type_id, 1, discount_code="BACK10")
    assert again_bought["discount_cents"] == 1000
    await _make_refunds(pool, effects, token, 2)
    made = await _sim_refunds(stripe_sim, intent)
    assert sorted(r["amount"] for r in made) == [10000, 20000]
    assert all(r["transfer_reversal"] for r in made)
    assert await _refund(api, key, token, None, 409) == {
        "error": "already_refunded",
        "detail": "every ticket of the purchase is refunded",
    }
    # Stripe's charge.refunded of our own refunds records nothing new.
    await _sim_event(stripe_sim, intent, "charge.refunded", 1)
    await asyncio.sleep(0.3)
    kinds = await _kinds(pool, f"purchase-{token}")
    assert (kinds["RefundDecided"], kinds["RefundMade"], kinds["RefundReported"]) == (2, 2, 0)

    await _rebuilt(pool)
    mails = await pool.fetchval(
        "SELECT count(*) FROM mail_outbox WHERE purchase_token = $1 AND kind = 'refund'", token
    )
    assert mails == 2
    statuses = await pool.fetch(
        "SELECT status FROM rm_tickets.tickets WHERE purchase_token = $1", token
    )
    assert {r["status"] for r in statuses} == {"refunded"}


@pytest.mark.parametrize("first_request", ["killed_after_answering", "cut_off_after_storing"])
async def test_a_retry_finds_the_refund_the_first_request_stored(
    api: TestClient,
    stripe_sim: TestClient,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    first_request: str,
) -> None:
    """The first request's answer never reached the partner: its gateway was killed before the
    answer was kept for the key, or the database went away just after the refund was stored
    (a 503). The retry under the key answers with that refund, not `already_refunded`."""
    key, _, type_id = await _event(pool, 2)
    bought = await _bought(api, stripe_sim, key, type_id, 2)
    token = bought["token"]
    headers = {"Idempotency-Key": f"refund-{token}"}
    body = {"ticket_ids": [bought["tickets"][0]["id"]]}
    if first_request == "killed_after_answering":
        await _refund(api, key, token, body, 201, **headers)
        await claimed_by_a_killed_gateway(pool, headers["Idempotency-Key"])
    else:
        stored_then_cut_off = Refunds._store

        async def cut_off(self: Refunds, *args: Any, **kwargs: Any) -> Any:
            await stored_then_cut_off(self, *args, **kwargs)
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in mid-operation")

        monkeypatch.setattr(Refunds, "_store", cut_off)
        failed = await _refund(api, key, token, body, 503, **headers)
        assert failed["error"] == "service_unavailable"
        monkeypatch.undo()
    again = await _refund(api, key, token, body, 201, **headers)
    assert again["refund"]["ticket_ids"] == body["ticket_ids"]
    assert again == await _refund(api, key, token, body, 201, **headers)  # kept from now on
    assert (await _kinds(pool, f"purchase-{token}"))["RefundDecided"] == 1


async def test_refunds_of_one_ticket_at_once_refund_it_once(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    """Refunds sent together reach the sales desk in one batch: each expects the purchase and
    the ticket as it read them, so one is stored and the others are decided again (refunded
    already), never a second refund of the same ticket."""
    key, _, type_id = await _event(pool, 2)
    bought = await _bought(api, stripe_sim, key, type_id, 2)
    body = {"ticket_ids": [bought["tickets"][0]["id"]]}
    path = f"/api/v1/purchases/{bought['token']}/refund"
    answers = await asyncio.gather(
        *(api.post(path, json=body, headers=bearer(key)) for _ in range(3))
    )
    refused = [await a.json() for a in answers if a.status != 201]
    assert sorted(a.status for a in answers) == [201, 409, 409], refused
    assert {r["error"] for r in refused} == {"already_refunded"}
    assert (await _kinds(pool, f"purchase-{bought['token']}"))["RefundDecided"] == 1
    assert (await _kinds(pool, f"ticket-{bought['tickets'][0]['id']}"))["TicketRefunded"] == 1


async def _first_ticket_refunded(
    api: TestClient, sim: TestClient, pool: asyncpg.Pool, seats: int
) -> tuple[str, dict, dict]:
    """A paid purchase of `seats` seats whose first ticket was refunded: key, purchase, refund."""
    key, _, type_id = await _event(pool, seats)
    bought = await _bought(api, sim, key, type_id, seats)
    first = {"ticket_ids": [bought["tickets"][0]["id"]]}
    return key, bought, (await _refund(api, key, bought["token"], first, 201))["refund"]


async def test_a_refund_e_mail_tells_the_buyer(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    _, bought, _ = await _first_ticket_refunded(api, stripe_sim, pool, 2)
    purchases = api.app[PURCHASES]
    documents = Documents(pool, purchases.catalog, "tickets@example.com", "{token}")
    message = await documents.compose(bought["token"], "refund")
    assert message is not None and message["To"] == BUYER["email"]
    text = message.get_body(("plain",)).get_content()
    assert "100,00" in text or "100.00" in text, text
    assert "Alm" in text


async def test_a_resent_confirmation_tells_what_was_paid_and_refunded(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    _, bought, refund = await _first_ticket_refunded(api, stripe_sim, pool, 3)
    documents = Documents(pool, api.app[PURCHASES].catalog, "tickets@example.com", "{token}")
    message = await documents.compose(bought["token"], "resend")
    assert message is not None
    text = message.get_body(("plain",)).get_content()
    paid = format_money(bought["total_cents"], bought["currency"])
    back = format_money(refund["amount_cents"], bought["currency"])
    assert f": 2 billet(ter), betalt i alt {paid}, heraf refunderet {back}." in text, text
    (attachment,) = list(message.iter_attachments())
    assert len(PdfReader(io.BytesIO(attachment.get_content())).pages) == 2


async def test_a_resend_of_a_purchase_refunded_whole_is_refused_not_dropped(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    """It answered 202 and no e-mail ever went: the e-mail carries only tickets still held."""
    key, _, type_id = await _event(pool, 2)
    bought = await _bought(api, stripe_sim, key, type_id, 2)
    resend = f"/api/v1/purchases/{bought['token']}/resend-email"
    await post(api, key, resend, {}, 202)
    await _refund(api, key, bought["token"], {}, 201)
    _, refused = await post(api, key, resend, {}, 409)
    assert refused["error"] == "order_inactive"


async def test_a_refunded_seats_attendee_view_says_so_in_a_paid_order(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    key, bought, _ = await _first_ticket_refunded(api, stripe_sim, pool, 2)
    gone = bought["tickets"][0]["ticket_code"]
    seats = (await buyer_bundle(api, key, bought))["lines"][0]["seats"]
    for seat in seats:
        view = await api.get(f"/api/v1/tickets/attendee/{seat['token']}", headers=bearer(key))
        body = await view.json()
        assert body["orderStatus"] == "paid"
        assert body["status"] == ("refunded" if seat["ticket_code"] == gone else "valid"), body
        # The e-mail's attendee page of a refunded seat is the pages' own 404, not the API's JSON.
        for path in (f"/attendee/{seat['token']}", f"/attendee/{seat['token']}/ticket.pdf"):
            page = await api.get(path)
            refunded = seat["ticket_code"] == gone
            assert page.status == (404 if refunded else 200), await page.text()
            if refunded:
                assert page.content_type == "text/html"
                assert page.headers["Referrer-Policy"] == "no-referrer"


async def test_each_tickets_share_of_the_fee_shows_before_payment_as_after(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    key, _, type_id = await _event(pool, 3, fee=c.FeeRule(percent_bps=500))
    _, created = await post(api, key, "/api/v1/purchases", order(type_id, 3), 201)
    pending = created["purchase"]
    shares = [t["service_fee_cents"] for t in pending["tickets"]]
    assert sum(shares) == pending["fee_cents"] > 0 and max(shares) - min(shares) <= 1
    intent = created["payment"]["stripe_payment_intent_id"]
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200

    async def paid() -> dict | None:
        purchase = await _purchase(api, key, pending["token"])
        return purchase if purchase["status"] == "paid" else None

    after = await _until(paid, "paid")
    assert [t["service_fee_cents"] for t in after["tickets"]] == shares


async def test_a_ticket_refunded_alone_gives_back_its_own_price_and_fee(
    api: TestClient, stripe_sim: TestClient, demo_token: str
) -> None:
    """Hamlet's Voksen and Barn differ in price, and the theatre's fee is 5 % of it: each
    ticket carried half the fee, so the cheaper one refunded alone gave back more fee than it
    paid and the dearer one less."""
    event = await (await api.get("/api/v1/events/hamlet-2026", headers=bearer(demo_token))).json()
    prices = {t["name"]: t["price_cents"] for t in event["ticket_types"]}
    ids = {t["name"]: t["id"] for t in event["ticket_types"]}
    body = {
        "event_slug": "hamlet-2026",
        "quantities": {str(ids["Voksen"]): 1, str(ids["Barn"]): 1},
        "buyer": BUYER,
    }
    _, created = await post(api, demo_token, "/api/v1/purchases", body, 201)
    shown = {t["ticket_type_id"]: t for t in created["purchase"]["tickets"]}
    barn = shown[ids["Barn"]]
    assert barn["service_fee_cents"] == round(barn["amount_cents"] * 0.05)
    intent = created["payment"]["stripe_payment_intent_id"]
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200
    token = created["purchase"]["token"]

    async def paid() -> bool:
        return (await _purchase(api, demo_token, token))["status"] == "paid"

    await _until(paid, "paid")
    refund = await _refund(api, demo_token, token, {"ticket_ids": [barn["id"]]}, 201)
    assert refund["refund"]["amount_cents"] == barn["amount_cents"] + barn["service_fee_cents"]
    assert prices["Barn"] >= barn["amount_cents"] > 0


async def test_the_service_fee_stays_when_the_organization_keeps_it(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    key, _, type_id = await _event(
        pool, 2, fee=c.FeeRule(per_ticket_cents=1000), refund_service_fee=False
    )
    bought = await _bought(api, stripe_sim, key, type_id, 2)
    refund = (await _refund(api, key, bought["token"], {}, 201))["refund"]
    assert refund["amount_cents"] == 20000 and bought["total_cents"] == 22000


async def test_a_refusal_under_an_idempotency_key_is_replayed_not_run_again(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    """The key's first answer is its answer, a refusal too: the refund refused while the
    purchase was unpaid is not made by the same request sent again once it is paid."""
    key, _, type_id = await _event(pool, 2)
    _, created = await post(api, key, "/api/v1/purchases", order(type_id, 1), 201)
    token, intent = created["purchase"]["token"], created["payment"]["stripe_payment_intent_id"]
    headers = {"Idempotency-Key": f"refund-early-{token}"}
    refused = await _refund(api, key, token, {}, 409, **headers)
    assert refused["error"] == "not_yet_paid"
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200

    async def paid() -> bool:
        return (await _purchase(api, key, token))["status"] == "paid"

    await _until(paid, "the purchase paid")
    again = await api.post(
        f"/api/v1/purchases/{token}/refund", json={}, headers={**bearer(key), **headers}
    )
    assert (again.status, again.headers.get("Idempotent-Replay")) == (409, "true")
    assert await again.json() == refused
    assert (await _kinds(pool, f"purchase-{token}"))["RefundDecided"] == 0


async def test_what_cannot_be_refunded(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool, aarhus_token: str
) -> None:
    key, _, type_id = await _event(pool, 4)
    _, created = await post(api, key, "/api/v1/purchases", order(type_id, 1), 201)
    pending = created["purchase"]["token"]
    assert (await _refund(api, key, pending, {}, 409))["error"] == "not_yet_paid"
    await post(api, key, f"/api/v1/purchases/{pending}/cancel", {}, 200)
    assert (await _refund(api, key, pending, {}, 409))["error"] == "order_inactive"

    bought = await _bought(api, stripe_sim, key, type_id, 2)
    token = bought["token"]
    unknown = await _refund(api, key, token, {"ticket_ids": [bought["tickets"][0]["id"], 1]}, 422)
    assert unknown["detail"].startswith("ticket_ids[1]"), unknown
    await _refund(api, key, token, {"ticket_ids": [1], "extra": True}, 422)
    await _refund(api, aarhus_token, token, {}, 404)
    await _refund(api, key, "no-such-purchase", {}, 404)

    code = bought["tickets"][0]["ticket_code"]
    await post(api, key, f"/api/v1/tickets/{code}/scan", {}, 200)
    scanned = await _refund(api, key, token, {"ticket_ids": [bought["tickets"][0]["id"]]}, 409)
    assert scanned["error"] == "ticket_scanned"
    assert (await _refund(api, key, token, {}, 409))["error"] == "ticket_scanned"
    forced = await _refund(api, key, token, {"force": True}, 201)
    assert len(forced["refund"]["ticket_ids"]) == 2
    # A refunded ticket is personalized no more.
    lookup = await api.get(
        f"/api/v1/tickets/{bought['access_code']}?email={BUYER['email']}", headers=bearer(key)
    )
    seat = (await lookup.json())["lines"][0]["seats"][1]
    patch = await api.patch(
        f"/api/v1/tickets/{bought['access_code']}",
        json={
            "email": BUYER["email"],
            "seats": [{"token": seat["token"], "name": "Ny Navn", "email": None}],
        },
        headers=bearer(key),
    )
    assert patch.status == 409, await patch.text()


async def test_a_refund_made_in_the_stripe_dashboard_is_applied_once(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    key, event_id, type_id = await _event(pool, 2)
    bought = await _bought(api, stripe_sim, key, type_id, 2)
    token, intent = bought["token"], bought["intent"]
    stream = f"purchase-{token}"

    # As `curl -d '{"amount": 5000}'` sends it (the partner API's way): JSON in a form's body.
    part = await stripe_sim.post(
        f"/_sim/payment_intents/{intent}/refund",
        data='{"amount": 5000}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert part.status == 200
    partial = await _sim_event(stripe_sim, intent, "charge.refunded", 0)

    async def reported(n: int) -> bool:
        return (await _kinds(pool, stream))["RefundReported"] >= n

    await _until(lambda: reported(1), "the partial refund recorded")
    assert await redeliver(api, partial) == "duplicate"
    shown = await api.get(f"/api/v1/purchases/{token}/refunds", headers=bearer(key))
    assert (await shown.json())["refunded_cents"] == 5000
    purchase = await _purchase(api, key, token)
    assert {t["ticket_status"] for t in purchase["tickets"]} == {"valid"}

    rest = await stripe_sim.post(f"/_sim/payment_intents/{intent}/refund")
    assert rest.status == 200
    full = await _sim_event(stripe_sim, intent, "charge.refunded", 1)
    await _until(lambda: reported(2), "the full refund recorded")
    assert await redeliver(api, full) == "duplicate"
    assert await redeliver(api, partial) == "duplicate"
    kinds = await _kinds(pool, stream)
    assert kinds["RefundReported"] == 2 and kinds["RefundDecided"] == 0, kinds
    purchase = await _purchase(api, key, token)
    assert {t["ticket_status"] for t in purchase["tickets"]} == {"refunded"}
    assert await _desk_taken(api, event_id) == set()
    over = await stripe_sim.post(f"/_sim/payment_intents/{intent}/refund?amount=1")
    assert (await over.json())["error"]["code"] == "charge_already_refunded"
    await _rebuilt(pool)
    assert not await pool.fetchval(
        "SELECT count(*) FROM payment_outbox WHERE purchase_token = $1", token
    )


async def test_a_dashboard_refund_while_a_decided_one_waits_still_repays_the_whole(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool, effects: PaymentEffects
) -> None:
    """The partner refunds the purchase; before the payments worker makes it, 50 kr. is
    refunded in Stripe's dashboard (its report adds nothing to the 200 kr. decided). Stripe
    then refuses the 200 kr. as too large: the rest, 150 kr., is refunded, so the buyer gets
    back what the decision and its e-mail say, and the refund is not left pending."""
    key, _, type_id = await _event(pool, 2)
    bought = await _bought(api, stripe_sim, key, type_id, 2)
    token, intent = bought["token"], bought["intent"]
    decided = (await _refund(api, key, token, None, 201))["refund"]
    assert (decided["amount_cents"], decided["status"]) == (20000, "pending")
    part = await stripe_sim.post(f"/_sim/payment_intents/{intent}/refund?amount=5000")
    assert part.status == 200
    await _sim_event(stripe_sim, intent, "charge.refunded", 0)

    await _make_refunds(pool, effects, token, 1)
    made = await _sim_refunds(stripe_sim, intent)
    assert sorted(r["amount"] for r in made) == [5000, 15000]
    listed = await api.get(f"/api/v1/purchases/{token}/refunds", headers=bearer(key))
    shown = await listed.json()
    [refund] = shown["refunds"]
    rest = next(r["id"] for r in made if r["amount"] == 15000)
    assert (refund["status"], refund["stripe_refund_id"]) == ("succeeded", rest)
    assert shown["refunded_cents"] == 20000


async def test_a_dashboard_refund_of_everything_settles_a_partial_refund_waiting(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool, effects: PaymentEffects
) -> None:
    """One ticket's refund waits for the payments worker while the whole payment is refunded
    in Stripe's dashboard: the other ticket is reported refunded there, and the waiting refund,
    which Stripe now refuses (nothing left), is made by the dashboard's; both are listed."""
    key, _, type_id = await _event(pool, 2)
    bought = await _bought(api, stripe_sim, key, type_id, 2)
    token, intent = bought["token"], bought["intent"]
    first, second = (t["id"] for t in bought["tickets"])
    await _refund(api, key, token, {"ticket_ids": [first]}, 201)
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/refund")).status == 200

    async def reported() -> bool:
        return (await _kinds(pool, f"purchase-{token}"))["RefundReported"] == 1

    await _until(reported, "the dashboard's refund recorded")
    await _make_refunds(pool, effects, token, 1)
    [dashboard] = await _sim_refunds(stripe_sim, intent)
    listed = await api.get(f"/api/v1/purchases/{token}/refunds", headers=bearer(key))
    shown = await listed.json()
    assert shown["refunded_cents"] == dashboard["amount"] == 20000
    views = {tuple(r["ticket_ids"]): r for r in shown["refunds"]}
    assert (views[(first,)]["status"], views[(first,)]["stripe_refund_id"]) == (
        "succeeded",
        dashboard["id"],
    )
    assert (views[(second,)]["by"], views[(second,)]["amount_cents"]) == ("stripe", 10000)
    assert (await _purchase(api, key, token))["status"] == "paid"


async def test_a_dispute_marks_the_purchase_and_is_listed(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool, aarhus_token: str
) -> None:
    key, _, type_id = await _event(pool, 2)
    bought = await _bought(api, stripe_sim, key, type_id, 1)
    token, intent = bought["token"], bought["intent"]
    opened = await stripe_sim.post(f"/_sim/payment_intents/{intent}/dispute?reason=fraudulent")
    dispute = await opened.json()
    assert "purchase_token" not in dispute["metadata"]
    created = await _sim_event(stripe_sim, intent, "charge.dispute.created")

    async def disputed() -> bool:
        return (await _kinds(pool, f"purchase-{token}"))["PaymentDisputed"] == 1

    await _until(disputed, "the dispute recorded")
    assert await redeliver(api, created) == "duplicate"
    for kind in ("charge.dispute.created", "charge.refunded"):
        # Another account's payment, unknown to this platform's Stripe: nothing of ours.
        stranger = {**created, "id": f"evt_stranger_{kind}", "type": kind}
        stranger["data"] = {"object": {**created["data"]["object"], "payment_intent": "pi_nope"}}
        assert await redeliver(api, stranger) == "ignored"
    assert (await _purchase(api, key, token))["disputed"] is True
    await _rebuilt(pool)
    listed = await api.get("/api/v1/disputes", headers=bearer(key))
    [shown] = (await listed.json())["disputes"]
    assert (shown["id"], shown["purchase_token"], shown["reason"]) == (
        dispute["id"],
        token,
        "fraudulent",
    )
    assert shown["amount_cents"] == 10000 and shown["status"] == "needs_response"
    others = await api.get("/api/v1/disputes", headers=bearer(aarhus_token))
    assert dispute["id"] not in {d["id"] for d in (await others.json())["disputes"]}


async def test_the_requests_list_shows_a_request_created_or_decided_a_moment_ago(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool, monkeypatch
) -> None:
    """A list asked right after a request is created, and right after it is approved, shows it
    as that call answered: it waits for the read model (projected here a moment later, by hand:
    no projector runs in these tests) rather than answering what the read model had before."""
    monkeypatch.setattr("services.usecases.refunds.WAIT_SECONDS", 30.0)  # a loaded machine
    key, _, type_id = await _event(pool, 1)
    bought = await _bought(api, stripe_sim, key, type_id, 1)
    (ticket,) = bought["tickets"]
    listing = f"/api/v1/refund-requests?ticket={ticket['ticket_code']}"

    async def listed_while_projected() -> list[tuple[str, str]]:
        answer = asyncio.ensure_future(api.get(listing, headers=bearer(key)))
        await asyncio.sleep(0.2)
        await _settled(pool)
        await rebuild(pool, RefundRequestsProjection())
        rows = (await (await answer).json())["refund_requests"]
        return [(r["id"], r["status"]) for r in rows]

    ask = f"/api/v1/tickets/{ticket['ticket_code']}/refund-requests"
    _, asked = await post(api, key, ask, {"email": BUYER["email"]}, 201)
    request_id = asked["refund_request"]["id"]
    assert await listed_while_projected() == [(request_id, "pending")]
    await post(api, key, f"/api/v1/refund-requests/{request_id}/approve", None, 200)
    assert await listed_while_projected() == [(request_id, "approved")]


async def test_refund_requests_are_approved_or_declined_once(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool, aarhus_token: str
) -> None:
    key, event_id, type_id = await _event(pool, 3)
    bought = await _bought(api, stripe_sim, key, type_id, 3)
    first, second = bought["tickets"][0], bought["tickets"][1]
    ask = f"/api/v1/tickets/{first['ticket_code']}/refund-requests"
    for email in ("someone@example.com", ""):
        await post(api, key, ask, {"email": email}, 404)
    await post(api, key, "/api/v1/tickets/NOSUCHCODE12/refund-requests", {"email": "x@y.z"}, 404)
    await post(api, aarhus_token, ask, {"email": BUYER["email"]}, 404)
    _, asked = await post(api, key, ask, {"email": BUYER["email"].upper(), "reason": "ill"}, 201)
    request = asked["refund_request"]
    assert (request["status"], request["ticket_id"], request["reason"]) == (
        "pending",
        first["id"],
        "ill",
    )
    _, other = await post(
        api,
        key,
        f"/api/v1/tickets/{second['ticket_code']}/refund-requests",
        {"email": BUYER["email"]},
        201,
    )

    await _rebuilt(pool)
    listed = await api.get(
        f"/api/v1/refund-requests?status=pending&ticket={first['ticket_code']}",
        headers=bearer(key),
    )
    assert [r["id"] for r in (await listed.json())["refund_requests"]] == [request["id"]]
    theirs = await api.get("/api/v1/refund-requests", headers=bearer(aarhus_token))
    assert request["id"] not in {r["id"] for r in (await theirs.json())["refund_requests"]}

    approve = f"/api/v1/refund-requests/{request['id']}/approve"
    await post(api, aarhus_token, approve, None, 404)
    _, approved = await post(api, key, approve, None, 200)
    assert approved["refund_request"]["status"] == "approved"
    assert approved["refund"]["ticket_ids"] == [first["id"]]
    assert approved["refund"]["by"] == "buyer"
    assert approved["refund_request"]["refund_id"] == approved["refund"]["id"]
    assert first["seat"]["seat_number"] not in await _desk_taken(api, event_id)
    assert (await post(api, key, approve, None, 409))[1]["error"] == "refund_request_closed"
    assert (await post(api, key, ask, {"email": BUYER["email"]}, 409))[1]["error"] == (
        "already_refunded"
    )

    decline = f"/api/v1/refund-requests/{other['refund_request']['id']}/decline"
    _, declined = await post(api, key, decline, {"reason": "no refunds after doors"}, 200)
    assert declined["refund_request"]["status"] == "declined"
    assert declined["refund_request"]["decline_reason"] == "no refunds after doors"
    await post(api, key, decline, {}, 409)
    await post(
        api, key, f"/api/v1/refund-requests/{other['refund_request']['id']}/approve", None, 409
    )
    purchase = await _purchase(api, key, bought["token"])
    assert [t["ticket_status"] for t in purchase["tickets"]] == ["refunded", "valid", "valid"]

    await _rebuilt(pool)
    decided = await api.get("/api/v1/refund-requests", headers=bearer(key))
    statuses = {r["id"]: r["status"] for r in (await decided.json())["refund_requests"]}
    assert statuses == {request["id"]: "approved", other["refund_request"]["id"]: "declined"}


async def test_a_refund_and_a_scan_of_one_ticket_at_once_one_wins(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    key, _, type_id = await _event(pool, 6)
    outcomes = Counter()
    for _ in range(6):
        bought = await _bought(api, stripe_sim, key, type_id, 1)
        ticket = bought["tickets"][0]
        refund_call = api.post(
            f"/api/v1/purchases/{bought['token']}/refund", json={}, headers=bearer(key)
        )
        scan_call = api.post(f"/api/v1/tickets/{ticket['ticket_code']}/scan", headers=bearer(key))
        refunded, scanned = await asyncio.gather(refund_call, scan_call)
        verdict = await scanned.json()
        refund = await refunded.json()
        kinds = await _kinds(pool, f"ticket-{ticket['id']}")
        if verdict["reason"] == "ok":
            assert (refunded.status, refund["error"]) == (409, "ticket_scanned"), refund
            assert kinds["TicketRefunded"] == 0 and kinds["TicketScanned"] == 1
            outcomes["scan"] += 1
        else:
            assert verdict["reason"] == "refunded" and refunded.status == 201, (verdict, refund)
            assert kinds["TicketRefunded"] == 1 and kinds["TicketScanned"] == 0
            outcomes["refund"] += 1
    assert sum(outcomes.values()) == 6


async def test_a_refund_while_the_payment_webhook_is_in_flight(
    serve, quiet_sim: TestClient, pool: asyncpg.Pool, catalog
) -> None:
    key, event_id, type_id = await _event(pool, 4)
    gateway = await serve(stripe_base=str(quiet_sim.make_url("")).rstrip("/"))
    for _ in range(3):
        _, created = await post(gateway, key, "/api/v1/purchases", order(type_id, 1), 201)
        token = created["purchase"]["token"]
        intent = created["payment"]["stripe_payment_intent_id"]
        await quiet_sim.post(f"/_sim/payment_intents/{intent}/succeed")
        succeeded = await _sim_event(quiet_sim, intent, "payment_intent.succeeded")
        # Paid at Stripe, the webhook not yet here: refused, nothing half-done.
        assert (await _refund(gateway, key, token, {}, 409))["error"] == "not_yet_paid"
        before = await _kinds(pool, f"purchase-{token}")
        assert set(before) == {"PurchaseOpened", "PaymentIntentCreated"}, before

        delivered, refund = await asyncio.gather(
            redeliver(gateway, succeeded),
            gateway.post(f"/api/v1/purchases/{token}/refund", json={}, headers=bearer(key)),
        )
        assert delivered == "paid"
        kinds = await _kinds(pool, f"purchase-{token}")
        purchase = await _purchase(gateway, key, token)
        ticket = purchase["tickets"][0]
        if refund.status == 409:
            assert (await refund.json())["error"] == "not_yet_paid"
            assert kinds["RefundDecided"] == 0 and ticket["ticket_status"] == "valid"
            assert ticket["seat"]["seat_number"] in await _desk_taken(gateway, event_id)
        else:
            assert refund.status == 201, await refund.text()
            assert kinds["RefundDecided"] == 1 and ticket["ticket_status"] == "refunded"
        assert kinds["PurchasePaid"] == 1


async def test_a_refund_reported_before_its_payment_is_applied_after_it(
    serve, quiet_sim: TestClient, pool: asyncpg.Pool, catalog
) -> None:
    """Stripe does not promise its events' order: the refund's report, come first, is refused
    (Stripe delivers it again) instead of lost, and the payment's report does not leave the
    buyer tickets for money given back."""
    key, _, type_id = await _event(pool, 4)
    gateway = await serve(stripe_base=str(quiet_sim.make_url("")).rstrip("/"))
    _, created = await post(gateway, key, "/api/v1/purchases", order(type_id, 2), 201)
    token = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    await quiet_sim.post(f"/_sim/payment_intents/{intent}/succeed")
    await quiet_sim.post(f"/_sim/payment_intents/{intent}/refund")
    succeeded = await _sim_event(quiet_sim, intent, "payment_intent.succeeded")
    refunded = await _sim_event(quiet_sim, intent, "charge.refunded")
    early = {k: v for k, v in refunded.items() if k != "delivery"}
    response = await signed_webhook(gateway, json.dumps(early))
    assert response.status == 409, await response.text()
    assert (await response.json())["error"] == "payment_not_recorded"
    assert "RefundReported" not in await _kinds(pool, f"purchase-{token}")
    assert await redeliver(gateway, succeeded) == "paid"
    assert await redeliver(gateway, refunded) == "refunded_outside"
    purchase = await _purchase(gateway, key, token)
    assert purchase["refunded_cents"] == purchase["total_cents"]
    assert {t["ticket_status"] for t in purchase["tickets"]} == {"refunded"}


async def _project_live(pool: asyncpg.Pool) -> None:
    """What the live projectors do: apply what is new, a few events at a time."""
    for projection in all_projections().values():
        async with pool.acquire() as conn:
            for _ in range(100_000):
                after = await read_checkpoint(conn, live_schema(projection))
                events = await read_all(conn, after, 25, projection.categories)
                if not events:
                    break
                await apply_batch(conn, projection, events)


async def _dump(pool: asyncpg.Pool, schema: str) -> dict[str, list[str]]:
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"
        " AND table_name <> 'checkpoint'",
        schema,
    )
    dumped = {}
    for t in tables:
        rows = await pool.fetch(f"SELECT * FROM {schema}.{t['table_name']}")
        dumped[t["table_name"]] = sorted(repr(tuple(r)) for r in rows)
    return dumped


async def test_every_read_model_rebuilt_after_the_refunds_equals_the_live_one(
    api: TestClient, stripe_sim: TestClient, pool: asyncpg.Pool
) -> None:
    key, _, type_id = await _event(pool, 4)
    bought = await _bought(api, stripe_sim, key, type_id, 3)
    await _project_live(pool)
    await _refund(api, key, bought["token"], {"ticket_ids": [bought["tickets"][0]["id"]]}, 201)
    await _project_live(pool)
    await stripe_sim.post(f"/_sim/payment_intents/{bought['intent']}/dispute")
    await _refund(api, key, bought["token"], None, 201)

    async def disputed() -> bool:
        return (await _kinds(pool, f"purchase-{bought['token']}"))["PaymentDisputed"] == 1

    await _until(disputed, "the dispute recorded")
    await _settled(pool)
    await _project_live(pool)
    for projection in all_projections().values():
        schema = live_schema(projection)
        live = await _dump(pool, schema)
        await rebuild(pool, projection)
        assert await _dump(pool, schema) == live, projection.name
