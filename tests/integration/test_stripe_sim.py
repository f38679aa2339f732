"""The Stripe simulator driven through the official SDK, as the service drives Stripe: intents,
confirmation by test card, cancellation, refunds, idempotency, and signed webhooks with
retries, checked by the service's own adapter (infra.payments)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web

from infra.embedded import free_port
from infra.payments import InvalidSignature, PaymentError, Payments, WebhookEvent
from services.dev.stripe_sim import create_simulator
from services.dev.stripe_webhooks import signature_header

SECRET = "whsec_test_simulator"
API_KEY = "sk_test_simulator"
ACCOUNT = "acct_demo_organization"
RETRY_DELAYS = (0.01, 0.02, 0.05)


@dataclass
class Receiver:
    """A webhook endpoint that answers 500 to its first `failures` deliveries."""

    failures: int = 0
    attempts: int = 0
    received: asyncio.Queue[tuple[bytes, str]] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            return web.Response(status=500)
        self.received.put_nowait((await request.read(), request.headers["Stripe-Signature"]))
        return web.Response()

    async def next(self) -> tuple[bytes, str]:
        return await asyncio.wait_for(self.received.get(), timeout=5)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    _, port = runner.addresses[0][:2]
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class Sim:
    """The simulator, the service's adapter in front of it, a plain SDK client standing in for
    the customer's side, and the webhook receiver."""

    base: str
    payments: Payments
    client: stripe.StripeClient
    receiver: Receiver

    async def event(self) -> WebhookEvent:
        payload, signature = await self.receiver.next()
        return self.payments.parse_webhook(payload, signature)

    async def create(self, token: str | None = None, amount: int = 25_000) -> str:
        ref = await self.payments.create_intent(
            purchase_token=token or uuid.uuid4().hex,
            amount_cents=amount,
            currency="SEK",
            connected_account_id=ACCOUNT,
            description="2 tickets",
        )
        return ref.id

    async def raw(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, **kwargs) as response,
        ):
            return response.status, response.headers, await response.json()


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    receiver = Receiver()
    hooks = web.Application()
    hooks.router.add_post("/webhooks/stripe", receiver.handle)
    hooks_runner, hooks_base = await _serve(hooks)
    app = create_simulator(f"{hooks_base}/webhooks/stripe", SECRET, retry_delays=RETRY_DELAYS)
    sim_runner, base = await _serve(app)
    payments = Payments(API_KEY, api_base=base, publishable_key="pk_test_x", webhook_secret=SECRET)
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(API_KEY, base_addresses={"api": base}, http_client=http)
    yield Sim(base, payments, client, receiver)
    await payments.close()
    await http.close_async()
    await sim_runner.cleanup()
    await hooks_runner.cleanup()


async def test_create_is_idempotent_per_purchase_token(sim: Sim) -> None:
    token = uuid.uuid4().hex
    first = await sim.payments.create_intent(
        purchase_token=token,
        amount_cents=25_000,
        currency="SEK",
        connected_account_id=ACCOUNT,
        description="2 tickets",
    )
    again = await sim.payments.create_intent(
        purchase_token=token,
        amount_cents=25_000,
        currency="SEK",
        connected_account_id=ACCOUNT,
        description="2 tickets",
    )
    assert again == first
    assert first.id.startswith("pi_")
    assert first.client_secret.startswith(f"{first.id}_secret_")
    assert first.status == "requires_payment_method"
    intent = await sim.client.v1.payment_intents.retrieve_async(first.id)
    assert (intent.amount, intent.currency, intent.livemode) == (25_000, "sek", False)
    assert intent.metadata["purchase_token"] == token
    assert intent.transfer_data is not None and intent.transfer_data.destination == ACCOUNT
    assert intent.latest_charge is None


async def test_one_key_with_other_parameters_is_an_idempotency_error(sim: Sim) -> None:
    token = uuid.uuid4().hex
    await sim.create(token, amount=25_000)
    with pytest.raises(PaymentError) as raised:
        await sim.create(token, amount=30_000)
    assert raised.value.code == "idempotency_error"


async def test_a_replay_is_marked_and_answers_the_stored_response(sim: Sim) -> None:
    request = {
        "headers": {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": uuid.uuid4().hex},
        "data": {"amount": "500", "currency": "sek"},
    }
    status, headers, first = await sim.raw("POST", "/v1/payment_intents", **request)
    assert status == 200 and "Idempotent-Replayed" not in headers
    status, headers, again = await sim.raw("POST", "/v1/payment_intents", **request)
    assert status == 200 and headers["Idempotent-Replayed"] == "true"
    assert again == first


async def test_visa_succeeds_and_a_signed_event_follows(sim: Sim) -> None:
    token = uuid.uuid4().hex
    intent_id = await sim.create(token)
    intent = await sim.client.v1.payment_intents.confirm_async(
        intent_id, {"payment_method": "pm_card_visa"}
    )
    assert intent.status == "succeeded"
    assert intent.latest_charge is not None and str(intent.latest_charge).startswith("ch_")
    event = await sim.event()
    assert event.id.startswith("evt_")
    assert (event.type, event.intent_id, event.purchase_token) == (
        "payment_intent.succeeded",
        intent_id,
        token,
    )
    assert (event.status, event.amount) == ("succeeded", 25_000)


async def test_a_declined_card_is_a_card_error_and_a_payment_failed_event(sim: Sim) -> None:
    intent_id = await sim.create()
    with pytest.raises(stripe.CardError) as raised:
        await sim.client.v1.payment_intents.confirm_async(
            intent_id, {"payment_method": "pm_card_chargeDeclined"}
        )
    assert raised.value.http_status == 402 and raised.value.code == "card_declined"
    event = await sim.event()
    assert (event.type, event.status) == (
        "payment_intent.payment_failed",
        "requires_payment_method",
    )
    intent = await sim.client.v1.payment_intents.retrieve_async(intent_id)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.code == "card_declined"


async def test_cancel_emits_canceled_and_a_succeeded_intent_cannot_be_canceled(sim: Sim) -> None:
    intent_id = await sim.create()
    await sim.payments.cancel_intent(intent_id)
    event = await sim.event()
    assert (event.type, event.intent_id, event.status) == (
        "payment_intent.canceled",
        intent_id,
        "canceled",
    )
    paid = await sim.create()
    await sim.raw("POST", f"/_sim/payment_intents/{paid}/succeed")
    with pytest.raises(PaymentError) as raised:
        await sim.payments.cancel_intent(paid)
    assert raised.value.code == "payment_intent_unexpected_state"


async def test_refund_emits_charge_refunded_after_the_success(sim: Sim) -> None:
    token = uuid.uuid4().hex
    intent_id = await sim.create(token)
    await sim.raw("POST", f"/_sim/payment_intents/{intent_id}/succeed")
    refund_key = f"refund-{token}"
    refund_id = await sim.payments.refund(intent_id, idempotency_key=refund_key)
    assert refund_id.startswith("re_")
    assert await sim.payments.refund(intent_id, idempotency_key=refund_key) == refund_id
    succeeded, refunded = await sim.event(), await sim.event()
    assert succeeded.type == "payment_intent.succeeded"
    assert (refunded.type, refunded.intent_id, refunded.purchase_token, refunded.amount) == (
        "charge.refunded",
        intent_id,
        token,
        25_000,
    )
    with pytest.raises(PaymentError) as raised:
        await sim.payments.refund(intent_id, idempotency_key=uuid.uuid4().hex)
    assert raised.value.code == "charge_already_refunded"


async def test_a_failing_receiver_gets_the_event_on_a_retry(sim: Sim) -> None:
    sim.receiver.failures = 2
    intent_id = await sim.create()
    await sim.payments.cancel_intent(intent_id)
    assert (await sim.event()).type == "payment_intent.canceled"
    assert sim.receiver.attempts == 3
    _, _, listed = await sim.raw("GET", "/_sim/events", params={"payment_intent": intent_id})
    [delivery] = [e["delivery"] for e in listed["data"]]
    assert delivery == {
        "status": "delivered",
        "attempts": 3,
        "last_status": 200,
        "last_error": None,
    }


async def test_an_unreachable_receiver_is_retried_then_marked_failed() -> None:
    runner, base = await _serve(
        create_simulator("http://127.0.0.1:9/", SECRET, retry_delays=(0.01,))
    )
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(
                f"{base}/v1/payment_intents", data={"amount": "500", "currency": "sek"}
            ) as created:
                intent_id = (await created.json())["id"]
            await session.post(f"{base}/v1/payment_intents/{intent_id}/cancel")
            for _ in range(100):
                async with session.get(f"{base}/_sim/events") as listed:
                    [delivery] = [e["delivery"] for e in (await listed.json())["data"]]
                if delivery["status"] != "pending":
                    break
                await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    assert delivery["status"] == "failed" and delivery["attempts"] == 2
    assert delivery["last_error"]


async def test_a_receiver_down_past_the_schedule_is_tried_until_it_answers() -> None:
    """As Stripe keeps retrying for days: a payment made while the service is down for longer
    than the first retries take is still reported once it is back."""
    receiver = Receiver()
    hooks = web.Application()
    hooks.router.add_post("/webhooks/stripe", receiver.handle)
    port = free_port()
    app = create_simulator(
        f"http://127.0.0.1:{port}/webhooks/stripe",
        SECRET,
        retry_delays=(0.01,),
        retry_every=0.05,
        retry_for=30.0,
    )
    runner, base = await _serve(app)
    hooks_runner = web.AppRunner(hooks)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            async with http.post(
                f"{base}/v1/payment_intents", data={"amount": "500", "currency": "sek"}
            ) as created:
                intent_id = (await created.json())["id"]
            await http.post(f"{base}/v1/payment_intents/{intent_id}/cancel")
            await asyncio.sleep(0.5)  # the schedule is over; the receiver is still down
            await hooks_runner.setup()
            await web.TCPSite(hooks_runner, "127.0.0.1", port).start()
            payload, _ = await receiver.next()
            assert json.loads(payload)["data"]["object"]["id"] == intent_id
            async with http.get(f"{base}/_sim/events") as listed:
                [delivery] = [e["delivery"] for e in (await listed.json())["data"]]
    finally:
        await runner.cleanup()
        await hooks_runner.cleanup()
    assert delivery["status"] == "delivered" and delivery["attempts"] > 3


async def test_a_restarted_simulator_keeps_its_payments_and_delivers_what_it_owed(
    tmp_path: Path,
) -> None:
    """Stripe does not forget a payment because a process died: a simulator started again on
    its journal knows the intents, replays idempotent answers, and delivers the webhook of a
    payment its receiver never got."""
    journal = tmp_path / "stripe-sim.jsonl"
    receiver = Receiver()
    hooks = web.Application()
    hooks.router.add_post("/webhooks/stripe", receiver.handle)
    port = free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/stripe"
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "order-1"}
    form = {"amount": "500", "currency": "dkk"}
    waiting = create_simulator(hook, SECRET, retry_delays=(30.0,), journal=journal)
    runner, base = await _serve(waiting)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/payment_intents", data=form, headers=headers) as r:
                created = await r.json()
            async with http.post(f"{base}/_sim/payment_intents/{created['id']}/succeed") as r:
                assert r.status == 200  # the receiver is down: the webhook is owed
    finally:
        await runner.cleanup()
    hooks_runner = web.AppRunner(hooks)
    await hooks_runner.setup()
    await web.TCPSite(hooks_runner, "127.0.0.1", port).start()
    runner, base = await _serve(create_simulator(hook, SECRET, retry_delays=(), journal=journal))
    try:
        payload, _ = await receiver.next()
        event = json.loads(payload)
        assert event["type"] == "payment_intent.succeeded"
        assert event["data"]["object"]["id"] == created["id"]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/payment_intents", data=form, headers=headers) as r:
                assert r.headers["Idempotent-Replayed"] == "true"
                assert (await r.json())["id"] == created["id"]
            get = {"Authorization": f"Bearer {API_KEY}"}
            async with http.get(f"{base}/v1/payment_intents/{created['id']}", headers=get) as r:
                assert (await r.json())["status"] == "succeeded"
            async with http.get(f"{base}/_sim/events") as r:
                [delivery] = [e["delivery"] for e in (await r.json())["data"]]
        assert delivery["status"] == "delivered"
    finally:
        await runner.cleanup()
        await hooks_runner.cleanup()
    assert receiver.attempts == 1


async def test_a_tampered_or_foreign_signature_is_rejected(sim: Sim) -> None:
    intent_id = await sim.create()
    await sim.payments.cancel_intent(intent_id)
    payload, signature = await sim.receiver.next()
    with pytest.raises(InvalidSignature):
        sim.payments.parse_webhook(payload.replace(b"canceled", b"succeeded"), signature)
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    foreign = signature_header(payload.decode(), "whsec_someone_else", timestamp)
    with pytest.raises(InvalidSignature):
        sim.payments.parse_webhook(payload, foreign)
    assert stripe.Webhook.construct_event(payload, signature, SECRET).type == (
        "payment_intent.canceled"
    )


async def test_errors_use_stripes_envelope(sim: Sim) -> None:
    status, _, body = await sim.raw("GET", "/v1/payment_intents/pi_missing")
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    status, _, body = await sim.raw("GET", "/v1/payment_intents/pi_missing", headers=auth)
    assert status == 404
    assert body["error"] == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": "No such payment_intent: 'pi_missing'",
        "param": "intent",
    }
    status, _, body = await sim.raw("POST", "/v1/payment_intents", headers=auth, data={})
    assert status == 400 and body["error"]["code"] == "parameter_missing"
    live = Payments("sk_live_nope", api_base=sim.base, publishable_key="", webhook_secret=SECRET)
    try:
        with pytest.raises(PaymentError) as raised:
            await live.cancel_intent("pi_x")
    finally:
        await live.close()
    assert raised.value.code == "authentication_error"
