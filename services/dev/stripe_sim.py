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
import copy
import itertools
import json
import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import stripe
import structlog
from aiohttp import web

from infra.codes import random_code
from services.dev.stripe_journal import Journal, Line
from services.dev.stripe_webhooks import (
    DEFAULT_RETRY_DELAYS,
    STRIPE_RETRY_EVERY,
    STRIPE_RETRY_FOR,
    Delivery,
    Json,
    Webhooks,
    unix_now,
)

log = structlog.get_logger(__name__)

Params = Mapping[str, str]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ALPHABET = string.ascii_letters + string.digits
_ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9_]+")
_SUCCEEDING_CARDS = frozenset({"pm_card_visa", "pm_card_mastercard"})
_DECLINES = {
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
_CANCELABLE = (*_CONFIRMABLE, "requires_capture", "processing")
_CANCELLATION_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer", "abandoned"})
_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
_DISPUTE_REASONS = frozenset(
    {"fraudulent", "duplicate", "product_not_received", "subscription_canceled", "general"}
)


def _new_id(prefix: str, length: int = 24) -> str:
    return prefix + random_code(_ALPHABET, length)


class StripeApiError(Exception):
    """An answer in Stripe's error envelope. `stored` is False for requests refused before the
    endpoint ran, which Stripe does not remember under their idempotency key."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        stored: bool = True,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.stored = stored
        fields = {"code": code, "param": param, **extra}
        self.error: Json = {
            "type": error_type,
            "message": message,
            **{k: v for k, v in fields.items() if v is not None},
        }

    def response(self) -> web.Response:
        return web.json_response({"error": self.error}, status=self.status)


def _invalid(message: str, param: str | None, code: str = "parameter_invalid") -> StripeApiError:
    return StripeApiError(
        400, "invalid_request_error", message, code=code, param=param, stored=False
    )


def _no_such(kind: str, object_id: str, param: str) -> StripeApiError:
    return StripeApiError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
        stored=False,
    )


def _unexpected_state(
    message: str, code: str = "payment_intent_unexpected_state"
) -> StripeApiError:
    return StripeApiError(400, "invalid_request_error", message, code=code)


def _sub_params(params: Params, name: str) -> dict[str, str]:
    """`metadata[purchase_token]=x` → {"purchase_token": "x"}: one level of Stripe's form
    nesting, which is all the modelled parameters use."""
    prefix = f"{name}["
    return {
        key[len(prefix) : -1]: value
        for key, value in params.items()
        if key.startswith(prefix) and key.endswith("]")
    }


def _int_param(params: Params, name: str, *, required: bool) -> int | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise _invalid(f"Missing required param: {name}.", name, "parameter_missing")
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise _invalid(f"Invalid integer: {raw}", name, "parameter_invalid_integer")
    if int(raw) < 1:
        raise _invalid("Amount must be at least 1.", name, "amount_too_small")
    return int(raw)


def _flag(params: Params, name: str) -> bool:
    raw = params.get(name, "false")
    if raw not in ("true", "false"):
        raise _invalid(f"Invalid boolean: {raw}", name)
    return raw == "true"


def _choice(params: Params, name: str, allowed: frozenset[str]) -> str | None:
    value = params.get(name)
    if value is not None and value not in allowed:
        raise _invalid(f"Invalid {name}: must be one of {', '.join(sorted(allowed))}", name)
    return value


def _account(params: Params, name: str) -> str | None:
    """Any well-formed `acct_...` id is a connected account of the simulated platform."""
    value = params.get(name)
    if value is not None and not _ACCOUNT_ID.fullmatch(value):
        raise _invalid(f"No such destination: '{value}'", name, "resource_missing")
    return value


def _payment_method(value: str | None) -> str | None:
    if value is not None and value not in _SUCCEEDING_CARDS and value not in _DECLINES:
        raise _invalid(f"No such PaymentMethod: '{value}'", "payment_method", "resource_missing")
    return value


@dataclass(frozen=True)
class _Stored:
    """A response remembered under an idempotency key, with the request it answered."""

    fingerprint: tuple[str, tuple[tuple[str, str], ...]]
    status: int
    body: bytes

    def as_json(self, key: str) -> Json:
        path, params = self.fingerprint
        return {
            "key": key,
            "path": path,
            "params": params,
            "status": self.status,
            "body": self.body.decode(),
        }

    @classmethod
    def from_json(cls, value: Json) -> _Stored:
        params = tuple((k, v) for k, v in value["params"])
        return cls((value["path"], params), value["status"], value["body"].encode())


NOTHING_YET = (0, 0, 0, 0)  # `Simulator.counts()` of an empty simulator


def _last(objects: dict[str, Any], before: int) -> list[str]:
    """The keys added to `objects` after it held `before` of them."""
    return list(itertools.islice(reversed(objects), len(objects) - before))


def _event_line(delivery: Delivery) -> Line:
    return "event", {
        "event": delivery.event,
        "intent_id": delivery.intent_id,
        "status": delivery.status,
    }


class Simulator:
    """The simulated platform account's objects, and the operations on them."""

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks
        self.intents: dict[str, Json] = {}
        self.charges: dict[str, Json] = {}
        self.refunds: list[Json] = []
        self.idempotent: dict[str, _Stored] = {}
        self.journal: Journal | None = None

    def keep(self, journal: Journal) -> None:
        """Restores what `journal` holds, writes it again compacted, and from now on writes
        each change to it (`_journaled`, and each delivery as it ends)."""
        self._restore(journal.read())
        journal.rewrite(self.changes(NOTHING_YET, None))  # everything: each charge is an intent's
        self.journal = journal
        self.webhooks.on_settled = lambda d: journal.write(
            [("delivery", {"id": d.event["id"], "status": d.status})]
        )

    def _restore(self, lines: list[Line]) -> None:
        refunds: dict[str, Json] = {}
        deliveries: dict[str, Delivery] = {}
        for kind, value in lines:
            if kind == "intent":
                self.intents[value["id"]] = value
            elif kind == "charge":
                self.charges[value["id"]] = value
            elif kind == "refund":
                refunds[value["id"]] = value
            elif kind == "idempotent":
                self.idempotent[value["key"]] = _Stored.from_json(value)
            elif kind == "event":
                event = value["event"]
                deliveries[event["id"]] = Delivery(event, value["intent_id"], value["status"])
            elif kind == "delivery" and value["id"] in deliveries:
                deliveries[value["id"]].status = value["status"]
        self.refunds = list(refunds.values())
        self.webhooks.deliveries = list(deliveries.values())

    def counts(self) -> tuple[int, int, int, int]:
        return (
            len(self.intents),
            len(self.refunds),
            len(self.idempotent),
            len(self.webhooks.deliveries),
        )

    def changes(self, since: tuple[int, int, int, int], intent_id: str | None) -> Iterator[Line]:
        """What a request changed, given the counts before it and the intent it named: every
        intent it made, named, refunded or emitted an event about, with its charge. Since
        NOTHING_YET: the whole state."""
        refunds = self.refunds[since[1] :]
        events = self.webhooks.deliveries[since[3] :]
        touched = {*_last(self.intents, since[0]), *(r["payment_intent"] for r in refunds)}
        touched |= {d.intent_id for d in events} | ({intent_id} & self.intents.keys())
        for touched_id in touched:
            intent = self.intents[touched_id]
            yield "intent", intent
            if intent["latest_charge"] is not None:
                yield "charge", self.charges[intent["latest_charge"]]
        yield from (("refund", refund) for refund in refunds)
        for key in _last(self.idempotent, since[2]):
            yield "idempotent", self.idempotent[key].as_json(key)
        yield from (_event_line(d) for d in events)

    def intent(self, intent_id: str) -> Json:
        found = self.intents.get(intent_id)
        if found is None:
            raise _no_such("payment_intent", intent_id, "intent")
        return found

    def create_intent(self, params: Params) -> Json:
        amount = _int_param(params, "amount", required=True)
        currency = params.get("currency")
        if not currency:
            raise _invalid("Missing required param: currency.", "currency", "parameter_missing")
        destination = _account(params, "transfer_data[destination]")
        intent_id = _new_id("pi_")
        payment_method = _payment_method(params.get("payment_method"))
        automatic = _sub_params(params, "automatic_payment_methods").get("enabled") == "true"
        intent: Json = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "automatic_payment_methods": {"enabled": True} if automatic else None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{intent_id}_secret_{_new_id('', 25)}",
            "confirmation_method": "automatic",
            "created": unix_now(),
            "currency": currency.lower(),
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": _sub_params(params, "metadata"),
            "next_action": None,
            "on_behalf_of": _account(params, "on_behalf_of"),
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "status": "requires_confirmation" if payment_method else "requires_payment_method",
            "transfer_data": {"destination": destination} if destination else None,
        }
        confirm = _flag(params, "confirm")
        self.intents[intent_id] = intent
        return self.confirm(intent, payment_method) if confirm else intent

    def confirm(self, intent: Json, payment_method: str | None) -> Json:
        """Succeeds or declines at once, by the test card: there is no 3-D Secure step."""
        _payment_method(payment_method)
        if intent["status"] not in _CONFIRMABLE:
            raise _unexpected_state(
                "You cannot confirm this PaymentIntent because it has a status of "
                f"{intent['status']}."
            )
        card = payment_method or intent["payment_method"]
        if card is None:
            raise _unexpected_state(
                "You cannot confirm this PaymentIntent because it's missing a payment method."
            )
        if card in _DECLINES:
            self._decline(intent, card)
        charge = self._charge(intent, card)
        intent.update(
            status="succeeded",
            payment_method=card,
            amount_received=intent["amount"],
            latest_charge=charge["id"],
            last_payment_error=None,
        )
        self._emit("payment_intent.succeeded", intent, intent["id"])
        return intent

    def _decline(self, intent: Json, card: str) -> NoReturn:
        decline_code, message = _DECLINES[card]
        error: Json = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": decline_code,
            "message": message,
            "payment_method": {"id": card, "object": "payment_method", "type": "card"},
        }
        intent.update(
            status="requires_payment_method", payment_method=None, last_payment_error=error
        )
        self._emit("payment_intent.payment_failed", intent, intent["id"])
        raise StripeApiError(
            402,
            "card_error",
            message,
            code="card_declined",
            decline_code=decline_code,
            payment_intent=copy.deepcopy(intent),
        )

    def _charge(self, intent: Json, card: str) -> Json:
        """The succeeded charge; like Stripe, it copies the intent's metadata once."""
        charge: Json = {
            "id": _new_id("ch_"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "captured": True,
            "created": unix_now(),
            "currency": intent["currency"],
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "on_behalf_of": intent["on_behalf_of"],
            "paid": True,
            "payment_intent": intent["id"],
            "payment_method": card,
            "refunded": False,
            "status": "succeeded",
            "transfer_data": intent["transfer_data"],
        }
        self.charges[charge["id"]] = charge
        return charge

    def cancel(self, intent: Json, params: Params) -> Json:
        reason = _choice(params, "cancellation_reason", _CANCELLATION_REASONS)
        if intent["status"] not in _CANCELABLE:
            raise _unexpected_state(
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
                f"may be canceled: {', '.join(_CANCELABLE)}."
            )
        intent.update(status="canceled", canceled_at=unix_now(), cancellation_reason=reason)
        self._emit("payment_intent.canceled", intent, intent["id"])
        return intent

    def refund(self, params: Params) -> Json:
        charge = self._refundable_charge(params)
        amount = _int_param(params, "amount", required=False)
        reason = _choice(params, "reason", _REFUND_REASONS)
        reverse = _flag(params, "reverse_transfer")
        _flag(params, "refund_application_fee")
        if reverse and charge["transfer_data"] is None:
            raise _invalid("This charge has no transfer to reverse.", "reverse_transfer")
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise _unexpected_state(
                f"Charge {charge['id']} has already been refunded.", "charge_already_refunded"
            )
        if amount is not None and amount > remaining:
            raise _unexpected_state(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                "amount_too_large",
            )
        refunded = amount or remaining
        charge["amount_refunded"] += refunded
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._emit("charge.refunded", charge, charge["payment_intent"])
        refund: Json = {
            "id": _new_id("re_"),
            "object": "refund",
            "amount": refunded,
            "charge": charge["id"],
            "created": unix_now(),
            "currency": charge["currency"],
            "metadata": _sub_params(params, "metadata"),
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "succeeded",
            "transfer_reversal": _new_id("trr_") if reverse else None,
        }
        self.refunds.append(refund)
        return refund

    def dispute(self, intent: Json, reason: str | None) -> Json:
        """The customer's bank disputes the charge. Like Stripe's, the dispute does not carry
        the charge's metadata: only its charge and PaymentIntent say what it is about."""
        if intent["latest_charge"] is None:
            raise _unexpected_state("This PaymentIntent has no charge to dispute.")
        charge = self.charges[intent["latest_charge"]]
        dispute: Json = {
            "id": _new_id("dp_"),
            "object": "dispute",
            "amount": charge["amount"] - charge["amount_refunded"],
            "charge": charge["id"],
            "created": unix_now(),
            "currency": charge["currency"],
            "livemode": False,
            "metadata": {},
            "payment_intent": intent["id"],
            "reason": reason or "general",
            "status": "needs_response",
        }
        charge["disputed"] = True
        self._emit("charge.dispute.created", dispute, intent["id"])
        return dispute

    def _refundable_charge(self, params: Params) -> Json:
        if "payment_intent" in params:
            intent = self.intents.get(params["payment_intent"])
            if intent is None:
                raise _no_such("payment_intent", params["payment_intent"], "payment_intent")
            if intent["latest_charge"] is None:
                raise _unexpected_state(
                    "This PaymentIntent does not have a successful charge to refund."
                )
            return self.charges[intent["latest_charge"]]
        if "charge" in params:
            charge = self.charges.get(params["charge"])
            if charge is None:
                raise _no_such("charge", params["charge"], "charge")
            return charge
        raise _invalid(
            "One of the following params should be provided for this request: "
            "payment_intent or charge.",
            None,
            "parameter_missing",
        )

    def _emit(self, event_type: str, obj: Json, ordering_key: str) -> None:
        """A snapshot event, as Stripe sends them: the object as it is at this moment."""
        event: Json = {
            "id": _new_id("evt_"),
            "object": "event",
            "api_version": stripe.api_version,
            "created": unix_now(),
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 0 if self.webhooks.url is None else 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.webhooks.emit(ordering_key, event)


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
    response.headers["Request-Id"] = _new_id("req_", 14)
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


def _replay(stored: _Stored, fingerprint: tuple[Any, ...], key: str) -> web.Response:
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
    simulator.idempotent[key] = _Stored(fingerprint, response.status, response.body)
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
    reason = _choice(params, "reason", _DISPUTE_REASONS)
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
