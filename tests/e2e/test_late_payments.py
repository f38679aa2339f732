"""Money at the edges, against the real database and the Stripe simulator: a payment that
arrives after its purchase let go of its seats, delivered many times at once, either sells the
seats or is refunded, exactly once and never both; and an expired or cancelled purchase's
PaymentIntent is cancelled at Stripe by the payments worker, after the event that decided it
is stored, so nobody can pay it afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from domain import discounts
from infra.payments import (
    SIMULATOR_API_KEY,
    SIMULATOR_PUBLISHABLE_KEY,
    SIMULATOR_WEBHOOK_SECRET,
    Payments,
)
from projections.payment_effects import PaymentEffectsProjection
from projections.rebuild import rebuild
from projections.refund_mail import RefundMailProjection
from services.api.context import PURCHASES
from services.usecases import catalog_commands
from services.usecases.ticket_documents import Documents
from services.workers.payment_effects import PaymentEffects
from tests.e2e.conftest import (
    BUYER,
    TEST,
    bearer,
    order,
    post,
    redeliver,
    small_event,
    succeeded_at_stripe,
)

DELIVERIES = 12
HOLD_MINUTES = 0.001  # 60 ms: a purchase can be expired as soon as it is made


def _base(quiet_sim: TestClient) -> str:
    return str(quiet_sim.make_url("")).rstrip("/")


@pytest.fixture
async def effects(pool: asyncpg.Pool, quiet_sim: TestClient) -> AsyncIterator[PaymentEffects]:
    payments = Payments(
        SIMULATOR_API_KEY,
        api_base=_base(quiet_sim),
        publishable_key=SIMULATOR_PUBLISHABLE_KEY,
        webhook_secret=SIMULATOR_WEBHOOK_SECRET,
    )
    yield PaymentEffects(pool, payments)
    await payments.close()


async def _carry_out(
    pool: asyncpg.Pool, effects: PaymentEffects, purchase: str, kinds: set[str]
) -> None:
    """What the projector and the payments worker do in `linjerum run`: queue what the stored
    events decided, then make it at Stripe; until the purchase's rows of `kinds` are done (a
    replay reads only what no open transaction can still overtake, so one pass may miss the
    newest events)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await rebuild(pool, PaymentEffectsProjection())
        while await effects.work_due():
            assert time.monotonic() < deadline, "the payment outbox never drained"
        done = await pool.fetch(
            "SELECT kind FROM payment_outbox WHERE purchase_token = $1 AND done_at IS NOT NULL",
            purchase,
        )
        if {r["kind"] for r in done} >= kinds:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kinds} carried out for {purchase}")


async def _sim_events(quiet_sim: TestClient, intent: str) -> list[dict]:
    response = await quiet_sim.get(f"/_sim/events?payment_intent={intent}")
    return (await response.json())["data"]


async def _kinds(pool: asyncpg.Pool, purchase: str) -> Counter[str]:
    rows = await pool.fetch("SELECT type FROM events WHERE stream_id = $1", f"purchase-{purchase}")
    return Counter(r["type"] for r in rows)


async def _expired_purchase(gateway: TestClient, token: str, type_id: int) -> tuple[str, str]:
    """A purchase of the event's seat, expired: (purchase token, its PaymentIntent)."""
    _, created = await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    await asyncio.sleep(HOLD_MINUTES * 60 + 0.05)
    assert await gateway.app[PURCHASES].endings.expire(purchase, TEST)
    return purchase, created["payment"]["stripe_payment_intent_id"]


async def _pay_late_many_times(
    quiet_sim: TestClient, gateways: list[TestClient], intent: str
) -> list[str]:
    """The buyer pays at Stripe; its one payment_intent.succeeded comes DELIVERIES times at
    once, to two gateways (as Stripe retries one that seemed to time out)."""
    succeeded = await succeeded_at_stripe(quiet_sim, intent)
    outcomes = await asyncio.gather(
        *(redeliver(gateways[i % 2], succeeded) for i in range(DELIVERIES))
    )
    return list(outcomes)


async def _gateways(serve, quiet_sim: TestClient, n: int = 2) -> list[TestClient]:
    return [await serve(hold_minutes=HOLD_MINUTES, stripe_base=_base(quiet_sim)) for _ in range(n)]


async def test_a_late_payment_delivered_many_times_sells_the_free_seat_once_and_never_refunds(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog, effects: PaymentEffects
) -> None:
    token, _, type_id = await small_event(pool, 1)
    gateways = await _gateways(serve, quiet_sim)
    purchase, intent = await _expired_purchase(gateways[0], token, type_id)

    outcomes = await _pay_late_many_times(quiet_sim, gateways, intent)
    await _carry_out(pool, effects, purchase, {"cancel_intent"})

    assert outcomes.count("paid_late") == 1, outcomes
    kinds = await _kinds(pool, purchase)
    assert kinds["PurchasePaid"] == 1, kinds
    assert kinds["LatePaymentRefundDecided"] == 0 and kinds["LatePaymentRefunded"] == 0, kinds
    view = await gateways[0].get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
    body = (await view.json())["purchase"]
    assert body["status"] == "paid"
    assert [t["ticket_status"] for t in body["tickets"]] == ["valid"]
    sim_kinds = [e["type"] for e in await _sim_events(quiet_sim, intent)]
    assert "charge.refunded" not in sim_kinds, sim_kinds
    assert "payment_intent.canceled" not in sim_kinds, sim_kinds


async def test_a_late_payment_for_a_seat_sold_since_is_refunded_exactly_once(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog, effects: PaymentEffects
) -> None:
    token, _, type_id = await small_event(pool, 1)
    gateways = await _gateways(serve, quiet_sim)
    purchase, intent = await _expired_purchase(gateways[0], token, type_id)
    await post(gateways[1], token, "/api/v1/purchases", order(type_id), 201)

    outcomes = await _pay_late_many_times(quiet_sim, gateways, intent)
    kinds = await _kinds(pool, purchase)
    assert kinds["LatePaymentRefundDecided"] == 1 and kinds["PurchasePaid"] == 0, kinds
    assert outcomes.count("refund_decided") == 1, outcomes
    sim_kinds = [e["type"] for e in await _sim_events(quiet_sim, intent)]
    assert "charge.refunded" not in sim_kinds, "refunded before the worker was asked"

    await _carry_out(pool, effects, purchase, {"refund", "cancel_intent"})
    # Again, as when a worker dies before it records that the refund was made: nothing more.
    await pool.execute(
        "UPDATE payment_outbox SET done_at = NULL, next_attempt_at = now()"
        " WHERE purchase_token = $1",
        purchase,
    )
    await _carry_out(pool, effects, purchase, {"refund", "cancel_intent"})
    sim_kinds = [e["type"] for e in await _sim_events(quiet_sim, intent)]
    assert sim_kinds.count("charge.refunded") == 1, sim_kinds
    kinds = await _kinds(pool, purchase)
    assert kinds["LatePaymentRefunded"] == 1 and kinds["PurchasePaid"] == 0, kinds
    view = await gateways[0].get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
    body = (await view.json())["purchase"]
    assert body["status"] == "expired" and body["stripe_status"] == "refunded"
    # The partner's account of the money says it went back, whole.
    assert body["refunded_cents"] == body["total_cents"]
    listed = await gateways[0].get(f"/api/v1/purchases/{purchase}/refunds", headers=bearer(token))
    refunds = await listed.json()
    [late] = refunds["refunds"]
    assert refunds["refunded_cents"] == late["amount_cents"] == body["total_cents"]
    assert (late["by"], late["status"]) == ("linjerum", "succeeded")
    assert late["stripe_refund_id"] and late["ticket_ids"] == [t["id"] for t in body["tickets"]]
    # The buyer is told, once: the money went back and no ticket came of it (no e-mail was).
    for _ in range(2):
        await rebuild(pool, RefundMailProjection())
    queued = await pool.fetch(
        "SELECT kind FROM mail_outbox WHERE purchase_token = $1 AND kind = 'refund'", purchase
    )
    assert len(queued) == 1
    documents = Documents(pool, gateways[0].app[PURCHASES].catalog, "t@example.com", "{token}")
    message = await documents.compose(purchase, "refund")
    assert message is not None and message["To"] == BUYER["email"]
    assert "Betalingen nåede frem" in message.get_body(("plain",)).get_content()


async def _discount_uses(pool: asyncpg.Pool, code: str) -> int:
    """Uses the event store holds for the code: redemptions less releases."""
    return await pool.fetchval(
        "SELECT count(*) FILTER (WHERE type = 'DiscountCodeRedeemed')"
        " - count(*) FILTER (WHERE type = 'DiscountCodeReleased') FROM events"
        " WHERE stream_id = (SELECT stream_id FROM events WHERE type = 'DiscountCodeCreated'"
        " AND data->>'code' = $1)",
        code,
    )


@pytest.mark.parametrize("used_since", [False, True])
async def test_a_late_payment_takes_its_discount_use_again_or_is_refunded(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog, used_since: bool
) -> None:
    """The expiry gave the purchase's discount use back with its seat. Paid late, it takes the
    use again with the seat; when another purchase took the code's last use since, the code
    is not sold past its limit: the payment is given back, as for a seat sold since."""
    token, _, type_id = await small_event(pool, 2)
    org = (await pool.fetchrow("SELECT organization_id FROM api_keys ORDER BY id DESC LIMIT 1"))[0]
    code = f"ONCE{uuid.uuid4().hex[:6].upper()}"
    await catalog_commands.create_discount_code(
        pool, org, discounts.CreateDiscountCode(code=code, percentage=10, max_uses=1), TEST
    )
    [gateway] = await _gateways(serve, quiet_sim, 1)
    _, created = await post(
        gateway, token, "/api/v1/purchases", order(type_id, discount_code=code), 201
    )
    purchase = created["purchase"]["token"]
    await asyncio.sleep(HOLD_MINUTES * 60 + 0.05)
    assert await gateway.app[PURCHASES].endings.expire(purchase, TEST)
    if used_since:  # the other seat: the late payment's own is free
        seat = created["purchase"]["tickets"][0]["seat"]
        other = {**seat, "seat_number": 3 - seat["seat_number"]}
        chosen = order(type_id, discount_code=code, selected_seats={str(type_id): [other]})
        await post(gateway, token, "/api/v1/purchases", chosen, 201)

    succeeded = await succeeded_at_stripe(quiet_sim, created["payment"]["stripe_payment_intent_id"])
    outcome = await redeliver(gateway, succeeded)
    assert outcome == ("refund_decided" if used_since else "paid_late")
    assert await _discount_uses(pool, code) == 1
    kinds = await _kinds(pool, purchase)
    assert (kinds["PurchasePaid"], kinds["LatePaymentRefundDecided"]) == (
        (0, 1) if used_since else (1, 0)
    )


async def _intent_status(quiet_sim: TestClient, intent: str) -> str:
    response = await quiet_sim.get(
        f"/v1/payment_intents/{intent}", headers={"Authorization": f"Bearer {SIMULATOR_API_KEY}"}
    )
    return (await response.json())["status"]


async def _cannot_be_paid(quiet_sim: TestClient, intent: str) -> None:
    assert await _intent_status(quiet_sim, intent) == "canceled"
    attempt = await quiet_sim.post(f"/_sim/payment_intents/{intent}/succeed")
    assert attempt.status == 400
    error = (await attempt.json())["error"]
    assert error["code"] == "payment_intent_unexpected_state", error


async def test_an_expired_purchase_intent_is_cancelled_and_cannot_be_paid(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog, effects: PaymentEffects
) -> None:
    token, _, type_id = await small_event(pool, 1)
    [gateway] = await _gateways(serve, quiet_sim, 1)
    purchase, intent = await _expired_purchase(gateway, token, type_id)
    assert await _intent_status(quiet_sim, intent) == "requires_payment_method"

    await _carry_out(pool, effects, purchase, {"cancel_intent"})
    await _cannot_be_paid(quiet_sim, intent)
    kinds = await _kinds(pool, purchase)
    assert kinds["PurchasePaid"] == 0 and kinds["PurchaseExpired"] == 1, kinds


async def test_a_cancelled_purchase_intent_is_cancelled_by_the_worker_not_the_request(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog, effects: PaymentEffects
) -> None:
    token, _, type_id = await small_event(pool, 1)
    [gateway] = await _gateways(serve, quiet_sim, 1)
    _, created = await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    await post(gateway, token, f"/api/v1/purchases/{purchase}/cancel", {}, 200)
    assert await _intent_status(quiet_sim, intent) == "requires_payment_method"

    await _carry_out(pool, effects, purchase, {"cancel_intent"})
    await _cannot_be_paid(quiet_sim, intent)


async def test_a_payment_that_beats_the_cancel_is_settled_as_a_late_payment(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog, effects: PaymentEffects
) -> None:
    """The buyer pays after the expiry is stored but before the worker cancels the intent:
    Stripe refuses the cancel, and the payment holds the free seat again."""
    token, _, type_id = await small_event(pool, 1)
    [gateway] = await _gateways(serve, quiet_sim, 1)
    purchase, intent = await _expired_purchase(gateway, token, type_id)
    assert await redeliver(gateway, await succeeded_at_stripe(quiet_sim, intent)) == "paid_late"

    await _carry_out(pool, effects, purchase, {"cancel_intent"})
    assert await _intent_status(quiet_sim, intent) == "succeeded"
    kinds = await _kinds(pool, purchase)
    assert kinds["PurchasePaid"] == 1 and kinds["LatePaymentRefundDecided"] == 0, kinds
    outcome = await pool.fetchval(
        "SELECT outcome FROM payment_outbox WHERE intent_id = $1 AND kind = 'cancel_intent'",
        intent,
    )
    assert outcome == "not_ended"
