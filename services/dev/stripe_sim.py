"""A Stripe simulator for development and tests, so `linjerum run` and the test suite take
payments without a network or a Stripe account. The service reaches it through the official
SDK by setting the SDK's base address; pointing that address back at Stripe (or leaving it
unset) is the only difference from production.

It speaks the subset of Stripe's v1 API the service uses, form-encoded as the SDK sends it:

    POST /v1/payment_intents                 create (`confirm=true` confirms at once)
    GET  /v1/payment_intents/{id}            retrieve
    POST /v1/payment_intents/{id}/confirm    `pm_card_visa` succeeds, `pm_card_chargeDeclined`
                                             is declined (402 card_error card_declined)
    POST /v1/payment_intents/{id}/cancel
    POST /v1/refunds                         by `payment_intent` or `charge`, all of what is
                                             left or `amount` of it (partial refunds add up to
                                             the charge, never beyond), `reverse_transfer`
                                             (the refund's `transfer_reversal`),
                                             `refund_application_fee`

with Bearer auth by any `sk_test_...` key, Stripe's error envelope and statuses, and
Idempotency-Key replay: a POST repeated with the same key and parameters answers the stored
response (`Idempotent-Replayed: true`), the same key with other parameters is a 400
idempotency_error. As with Stripe, requests refused before the endpoint runs (authentication,
parameter validation, unknown objects) are not stored under their key. Parameters the
simulator does not model (expand, return_url, ...) are accepted and ignored.

Every state change emits a Stripe event (`payment_intent.succeeded`,
`payment_intent.payment_failed`, `payment_intent.canceled`, `charge.refunded` with the
charge's `amount_refunded` so far, `charge.dispute.created`), POSTed in the
background to the webhook URL with a `Stripe-Signature` header that
`stripe.Webhook.construct_event` verifies. Events about one PaymentIntent are delivered in the
order they happened; a delivery answered with a non-2xx status or a connection error is retried
after each of `retry_delays` in turn, then (when served: `linjerum run`, `linjerum stripe-sim`)
every 5 s for three days, as Stripe keeps retrying, then marked failed
(services/dev/stripe_webhooks.py). API responses never wait for it.

Helpers for tests and debugging, without authentication (the simulator listens on loopback):

    POST /_sim/payment_intents/{id}/succeed  the customer pays: confirm with `pm_card_visa`
    POST /_sim/payment_intents/{id}/fail     the customer's card is declined
    POST /_sim/payment_intents/{id}/refund   a refund made in Stripe's dashboard (`amount`
                                             optional, form or query), no transfer reversed
    POST /_sim/payment_intents/{id}/dispute  the customer's bank disputes the charge (`reason`
                                             optional): a dispute and charge.dispute.created
    GET  /_sim/refunds[?payment_intent=pi_…] refunds made, oldest first
    GET  /_sim/events[?payment_intent=pi_…]  emitted events, oldest first, each with a
                                             `delivery` {status, attempts, last_status,
                                             last_error}; status is pending, delivered,
                                             failed or not_configured (no webhook URL)

All state is in memory; a served simulator (`linjerum run`, `linjerum stripe-sim`) also keeps it
in a journal in the data folder, so a restart forgets no object, key or event, and delivers the
webhooks still owed (services/dev/stripe_journal.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from services.dev.stripe_journal import Journal
from services.dev.stripe_objects import DISPUTE_REASONS, Simulator, Stored
from services.dev.stripe_params import StripeApiError, choice, new_id
from services.dev.stripe_webhooks import (
    DEFAULT_RETRY_DELAYS,
    STRIPE_RETRY_EVERY,
    STRIPE_RETRY_FOR,
    Webhooks,
)

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


SIMULATOR: web.AppKey[Simulator] = web.AppKey("stripe_simulator", Simulator)


async def _params(request: web.Request) -> dict[str, str]:
    source = request.query if request.method == "GET" else await request.post()
    return {key: value for key, value in source.items() if isinstance(value, str)}


def _unrecognized(request: web.Request) -> StripeApiError:
    return StripeApiError(
        404,
        "invalid_request_error",
        f"Unrecognized request URL ({request.method}: {request.path}).",
        stored=False,
    )


@web.middleware
async def _envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer carries a request id; every failure is in Stripe's error envelope."""
    try:
        response = await handler(request)
    except StripeApiError as exc:
        response = exc.response()
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        response = _unrecognized(request).response()
    response.headers["Request-Id"] = new_id("req_", 14)
    return response


def _masked(key: str) -> str:
    return f"{key[:8]}{'*' * 8}{key[-4:]}" if len(key) > 16 else "*" * 8


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any test-mode secret key is the platform's; anything else is refused as Stripe does."""
    if request.path.startswith("/v1/"):
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            raise StripeApiError(
                401,
                "invalid_request_error",
                "You did not provide an API key. Provide it in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                stored=False,
            )
        if not key.startswith("sk_test_"):
            raise StripeApiError(
                401,
                "invalid_request_error",
                f"Invalid API Key provided: {_masked(key)}",
                stored=False,
            )
    return await handler(request)


def _replay(stored: Stored, fingerprint: tuple[Any, ...], key: str) -> web.Response:
    if stored.fingerprint != fingerprint:
        raise StripeApiError(
            400,
            "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{key}' if you meant to execute a "
            "different request.",
            stored=False,
        )
    return web.Response(
        body=stored.body,
        status=stored.status,
        content_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


@web.middleware
async def _journaled(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A POST's changes are in the journal (when the simulator keeps one) before its answer
    leaves, a refused one's too (a declined card changes its intent)."""
    simulator = request.app[SIMULATOR]
    if simulator.journal is None or request.method != "POST":
        return await handler(request)
    since = simulator.counts()
    try:
        return await handler(request)
    finally:
        simulator.journal.write(simulator.changes(since, request.match_info.get("id")))


@web.middleware
async def _idempotent(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stripe's Idempotency-Key contract for POSTs. Nothing between the lookup and the store
    yields to the event loop (the form is already read), so concurrent retries cannot race."""
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or not request.path.startswith("/v1/"):
        return await handler(request)
    fingerprint = (request.path, tuple(sorted((await _params(request)).items())))
    simulator = request.app[SIMULATOR]
    stored = simulator.idempotent.get(key)
    if stored is not None:
        return _replay(stored, fingerprint, key)
    try:
        response = await handler(request)
    except StripeApiError as exc:
        if not exc.stored:
            raise
        response = exc.response()
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    simulator.idempotent[key] = Stored(fingerprint, response.status, response.body)
    return response


async def _create_intent(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].create_intent(await _params(request)))


async def _retrieve_intent(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].intent(request.match_info["id"]))


async def _confirm_intent(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    params = await _params(request)
    intent = simulator.intent(request.match_info["id"])
    return web.json_response(simulator.confirm(intent, params.get("payment_method")))


async def _cancel_intent(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    params = await _params(request)
    intent = simulator.intent(request.match_info["id"])
    return web.json_response(simulator.cancel(intent, params))


async def _create_refund(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].refund(await _params(request)))


def _customer_pays(card: str) -> Handler:
    """A test helper: what the customer's browser would do with Stripe.js."""

    async def pay(request: web.Request) -> web.Response:
        simulator = request.app[SIMULATOR]
        intent = simulator.intent(request.match_info["id"])
        return web.json_response(simulator.confirm(intent, card))

    return pay


async def _helper_params(request: web.Request) -> dict[str, str]:
    """A `/_sim` helper's parameters: in the query and the form as Stripe takes them, or in a
    JSON object as the partner API takes them (what `curl -d '{"amount": 100}'` sends)."""
    raw = await request.read()
    if not raw.lstrip().startswith(b"{"):
        return {**request.query, **await _params(request)}
    try:
        given = json.loads(raw)
    except ValueError:
        raise StripeApiError(400, "invalid_request_error", "Invalid JSON body.") from None
    return {**request.query, **{str(k): str(v) for k, v in given.items() if v is not None}}


async def _dashboard_refund(request: web.Request) -> web.Response:
    """A test helper: a refund made by hand in Stripe's dashboard, no idempotency key."""
    params = await _helper_params(request)
    amount = {"amount": params["amount"]} if "amount" in params else {}
    simulator = request.app[SIMULATOR]
    intent_id = simulator.intent(request.match_info["id"])["id"]
    return web.json_response(simulator.refund({"payment_intent": intent_id, **amount}))


async def _dispute(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    params = await _helper_params(request)
    reason = choice(params, "reason", DISPUTE_REASONS)
    return web.json_response(simulator.dispute(simulator.intent(request.match_info["id"]), reason))


async def _list_refunds(request: web.Request) -> web.Response:
    intent_id = request.query.get("payment_intent")
    refunds = request.app[SIMULATOR].refunds
    data = [r for r in refunds if intent_id in (None, r["payment_intent"])]
    return web.json_response({"object": "list", "data": data, "has_more": False})


async def _list_events(request: web.Request) -> web.Response:
    intent_id = request.query.get("payment_intent")
    deliveries = request.app[SIMULATOR].webhooks.deliveries
    data = [d.as_json() for d in deliveries if intent_id in (None, d.intent_id)]
    return web.json_response({"object": "list", "data": data, "has_more": False})


def create_simulator(
    webhook_url: str | None,
    webhook_secret: str,
    *,
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
    retry_every: float = STRIPE_RETRY_EVERY,
    retry_for: float = 0.0,
    journal: Path | None = None,
) -> web.Application:
    """The simulator as an aiohttp application; webhook_url None records events without
    delivering them. A delivery is tried after each of `retry_delays`, then every
    `retry_every` seconds for `retry_for` seconds (a served simulator: Stripe's three days).
    With a `journal` its objects outlive the process (services/dev/stripe_journal.py)."""
    webhooks = Webhooks(webhook_url, webhook_secret, retry_delays, retry_every, retry_for)
    simulator = Simulator(webhooks)
    app = web.Application(middlewares=[_envelope, _authenticate, _journaled, _idempotent])
    app[SIMULATOR] = simulator

    async def webhook_session(_: web.Application) -> AsyncIterator[None]:
        if journal is not None:
            simulator.keep(Journal(journal))
        await simulator.webhooks.start()
        simulator.webhooks.resume()
        yield
        await simulator.webhooks.close()
        if simulator.journal is not None:
            simulator.journal.close()

    app.cleanup_ctx.append(webhook_session)
    app.router.add_post("/v1/payment_intents", _create_intent)
    app.router.add_get("/v1/payment_intents/{id}", _retrieve_intent)
    app.router.add_post("/v1/payment_intents/{id}/confirm", _confirm_intent)
    app.router.add_post("/v1/payment_intents/{id}/cancel", _cancel_intent)
    app.router.add_post("/v1/refunds", _create_refund)
    app.router.add_get("/v1/refunds", _list_refunds)
    app.router.add_post("/_sim/payment_intents/{id}/succeed", _customer_pays("pm_card_visa"))
    app.router.add_post("/_sim/payment_intents/{id}/fail", _customer_pays("pm_card_chargeDeclined"))
    app.router.add_post("/_sim/payment_intents/{id}/refund", _dashboard_refund)
    app.router.add_post("/_sim/payment_intents/{id}/dispute", _dispute)
    app.router.add_get("/_sim/events", _list_events)
    app.router.add_get("/_sim/refunds", _list_refunds)
    return app


async def serve_simulator(
    host: str,
    port: int,
    webhook_url: str | None,
    webhook_secret: str,
    started: asyncio.Event | None = None,
    journal: Path | None = None,
) -> None:
    """Serves the simulator until cancelled, then stops it and its pending deliveries;
    `started` is set once it listens. `journal`: where its objects are kept."""
    app = create_simulator(webhook_url, webhook_secret, retry_for=STRIPE_RETRY_FOR, journal=journal)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("stripe_simulator_started", url=f"http://{host}:{port}", webhook_url=webhook_url)
        if started is not None:
            started.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
