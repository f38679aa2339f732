"""How the adapter creates a PaymentIntent over Stripe's HTTP API, against a stand-in Stripe that
answers as told: what it sends, which failures it retries with the same idempotency key (the
SDK's rule), and the error codes it reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from infra.payments import PaymentError, Payments

ACCOUNT = "acct_demo_organization"
CREATED = {
    "id": "pi_1",
    "object": "payment_intent",
    "status": "requires_payment_method",
    "client_secret": "pi_1_secret_x",
    "amount": 25000,
}


@dataclass
class Stripe:
    """Answers each POST with the next of `answers` (the last one again once they run out) and
    keeps what it was sent."""

    answers: list[web.Response]
    requests: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), dict(await request.post())))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return web.Response(
            status=answer.status, body=answer.body, headers=answer.headers, content_type=None
        )


def _json(status: int, body: dict, **headers: str) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _error(status: int, kind: str, code: str | None = None, **headers: str) -> web.Response:
    detail = {"type": kind, "message": f"{kind} here"} | ({"code": code} if code else {})
    return _json(status, {"error": detail}, **headers)


@pytest.fixture
async def stripe_answering() -> AsyncIterator[Callable[..., object]]:
    started: list[tuple[web.AppRunner, Payments]] = []

    async def serve(*answers: web.Response, key: str = "sk_test_x") -> tuple[Stripe, Payments]:
        stripe = Stripe(list(answers))
        app = web.Application()
        app.router.add_post("/v1/payment_intents", stripe.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        payments = Payments(
            key, api_base=f"http://127.0.0.1:{port}", publishable_key="", webhook_secret=""
        )
        started.append((runner, payments))
        return stripe, payments

    yield serve
    for runner, payments in started:
        await payments.close()
        await runner.cleanup()


async def _create(payments: Payments) -> object:
    return await payments.create_intent(
        purchase_token="tok_1",
        amount_cents=25_000,
        currency="SEK",
        connected_account_id=ACCOUNT,
        description="2 tickets",
    )


async def test_an_intent_is_one_form_post_with_the_purchase_as_idempotency_key(
    stripe_answering,
) -> None:
    stripe, payments = await stripe_answering(_json(200, CREATED))
    intent = await _create(payments)
    assert (intent.id, intent.client_secret, intent.status) == (
        "pi_1",
        "pi_1_secret_x",
        "requires_payment_method",
    )
    [(headers, form)] = stripe.requests
    assert headers["Authorization"] == "Bearer sk_test_x"
    assert headers["Idempotency-Key"] == "tok_1"
    assert headers["Stripe-Version"]
    assert form == {
        "amount": "25000",
        "currency": "sek",
        "description": "2 tickets",
        "metadata[purchase_token]": "tok_1",
        "transfer_data[destination]": ACCOUNT,
        "automatic_payment_methods[enabled]": "true",
    }


async def test_a_server_error_or_conflict_is_retried_with_the_same_key(stripe_answering) -> None:
    stripe, payments = await stripe_answering(
        _error(500, "api_error"), _error(409, "idempotency_error"), _json(200, CREATED)
    )
    assert (await _create(payments)).id == "pi_1"
    assert [h["Idempotency-Key"] for h, _ in stripe.requests] == ["tok_1"] * 3


async def test_retries_stop_after_two_and_report_stripes_code(stripe_answering) -> None:
    stripe, payments = await stripe_answering(_error(500, "api_error", "processing_error"))
    with pytest.raises(PaymentError) as raised:
        await _create(payments)
    assert raised.value.code == "processing_error"
    assert len(stripe.requests) == 3


async def test_a_refusal_is_not_retried_unless_stripe_says_so(stripe_answering) -> None:
    stripe, payments = await stripe_answering(
        _error(400, "invalid_request_error", "amount_too_small")
    )
    with pytest.raises(PaymentError) as raised:
        await _create(payments)
    assert (raised.value.code, raised.value.message) == (
        "amount_too_small",
        "invalid_request_error here",
    )
    assert len(stripe.requests) == 1

    told, payments = await stripe_answering(
        _error(500, "api_error", **{"Stripe-Should-Retry": "false"})
    )
    with pytest.raises(PaymentError):
        await _create(payments)
    assert len(told.requests) == 1

    locked, payments = await stripe_answering(
        _error(400, "invalid_request_error", "lock_timeout", **{"Stripe-Should-Retry": "true"}),
        _json(200, CREATED),
    )
    assert (await _create(payments)).id == "pi_1"
    assert len(locked.requests) == 2


async def test_a_wrong_key_is_an_authentication_error(stripe_answering) -> None:
    _, payments = await stripe_answering(_error(401, "invalid_request_error"), key="sk_live_x")
    with pytest.raises(PaymentError) as raised:
        await _create(payments)
    assert raised.value.code == "authentication_error"


async def test_stripe_out_of_reach_is_a_connection_error() -> None:
    payments = Payments(
        "sk_test_x", api_base="http://127.0.0.1:9", publishable_key="", webhook_secret=""
    )
    try:
        with pytest.raises(PaymentError) as raised:
            await _create(payments)
    finally:
        await payments.close()
    assert raised.value.code == "api_connection_error"


async def test_an_answer_that_is_no_intent_is_an_api_error(stripe_answering) -> None:
    _, payments = await stripe_answering(_json(200, {"object": "list"}))
    with pytest.raises(PaymentError) as raised:
        await _create(payments)
    assert raised.value.code == "api_error"
