"""Stripe's webhook ingress: a verified signature first, then each Stripe event applied once.
A bad signature, or a signed body that is not a Stripe event, is a 400 that changes nothing
(retrying cannot help); a failure is a 500, or a 503 while the database is out of reach, so
Stripe retries, as it does a refund reported before its payment (409 payment_not_recorded)."""

from __future__ import annotations

from aiohttp import web

from infra.eventstore import Metadata
from infra.payments import InvalidPayload, InvalidSignature, PaymentError
from services.api.context import PURCHASES, REFUNDS, request_id_of
from services.api.errors import ApiError, service_unavailable
from services.api.http import json_response
from services.api.routes import Route
from services.api.schemas import Payload
from services.usecases.settlement import Settlement


class WebhookReceipt(Payload):
    received: bool
    outcome: str


async def stripe_webhook(request: web.Request) -> web.Response:
    purchases = request.app[PURCHASES]
    payments = purchases.intents.payments
    if payments is None:
        raise ApiError(503, "payment_processing_unavailable", "Stripe is not configured")
    payload = await request.read()
    try:
        event = payments.parse_webhook(payload, request.headers.get("Stripe-Signature", ""))
    except InvalidSignature:
        raise ApiError(400, "invalid_signature", "Stripe-Signature does not verify") from None
    except InvalidPayload as exc:
        raise ApiError(400, "invalid_payload", str(exc)) from None
    # The correlation id is the purchase's, filled in where its stream is read (settle).
    meta = Metadata(request_id=request_id_of(request), actor="stripe", causation_id=event.id)
    if event.report in ("refunded", "disputed"):
        try:
            outcome = await request.app[REFUNDS].settle(event, meta)
        except PaymentError as exc:
            # Stripe could not tell whose the PaymentIntent is: its retry may find out.
            raise service_unavailable(f"Stripe could not be asked: {exc.message}") from None
    else:
        outcome = await Settlement(purchases).settle(event, meta)
    return json_response(WebhookReceipt(received=True, outcome=outcome))


ROUTES = [
    Route(
        "POST",
        "/api/v1/webhooks/stripe",
        stripe_webhook,
        "Stripe webhook ingress (signed by Stripe)",
        "Webhooks",
        WebhookReceipt,
        errors=(400, 409, 503),
        authenticated=False,
    ),
]
