"""The simulated Stripe account's objects (PaymentIntents, charges, refunds, disputes) and the
operations on them, each emitting the event Stripe would; the HTTP side is
services/dev/stripe_sim.py."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import stripe

from services.dev.stripe_journal import Journal, Line
from services.dev.stripe_params import (
    DECLINES,
    Params,
    StripeApiError,
    account,
    card_param,
    choice,
    flag,
    int_param,
    invalid,
    new_id,
    no_such,
    sub_params,
    unexpected_state,
)
from services.dev.stripe_webhooks import Delivery, Json, Webhooks, unix_now

_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
_CANCELABLE = (*_CONFIRMABLE, "requires_capture", "processing")
_CANCELLATION_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer", "abandoned"})
_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
DISPUTE_REASONS = frozenset(
    {"fraudulent", "duplicate", "product_not_received", "subscription_canceled", "general"}
)


@dataclass(frozen=True)
class Stored:
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
    def from_json(cls, value: Json) -> Stored:
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
        self.idempotent: dict[str, Stored] = {}
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
                self.idempotent[value["key"]] = Stored.from_json(value)
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
            raise no_such("payment_intent", intent_id, "intent")
        return found

    def create_intent(self, params: Params) -> Json:
        amount = int_param(params, "amount", required=True)
        currency = params.get("currency")
        if not currency:
            raise invalid("Missing required param: currency.", "currency", "parameter_missing")
        destination = account(params, "transfer_data[destination]")
        intent_id = new_id("pi_")
        payment_method = card_param(params.get("payment_method"))
        automatic = sub_params(params, "automatic_payment_methods").get("enabled") == "true"
        intent: Json = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "automatic_payment_methods": {"enabled": True} if automatic else None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{intent_id}_secret_{new_id('', 25)}",
            "confirmation_method": "automatic",
            "created": unix_now(),
            "currency": currency.lower(),
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": sub_params(params, "metadata"),
            "next_action": None,
            "on_behalf_of": account(params, "on_behalf_of"),
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "status": "requires_confirmation" if payment_method else "requires_payment_method",
            "transfer_data": {"destination": destination} if destination else None,
        }
        confirm = flag(params, "confirm")
        self.intents[intent_id] = intent
        return self.confirm(intent, payment_method) if confirm else intent

    def confirm(self, intent: Json, payment_method: str | None) -> Json:
        """Succeeds or declines at once, by the test card: there is no 3-D Secure step."""
        card_param(payment_method)
        if intent["status"] not in _CONFIRMABLE:
            raise unexpected_state(
                "You cannot confirm this PaymentIntent because it has a status of "
                f"{intent['status']}."
            )
        card = payment_method or intent["payment_method"]
        if card is None:
            raise unexpected_state(
                "You cannot confirm this PaymentIntent because it's missing a payment method."
            )
        if card in DECLINES:
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
        decline_code, message = DECLINES[card]
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
            "id": new_id("ch_"),
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
        reason = choice(params, "cancellation_reason", _CANCELLATION_REASONS)
        if intent["status"] not in _CANCELABLE:
            raise unexpected_state(
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
                f"may be canceled: {', '.join(_CANCELABLE)}."
            )
        intent.update(status="canceled", canceled_at=unix_now(), cancellation_reason=reason)
        self._emit("payment_intent.canceled", intent, intent["id"])
        return intent

    def refund(self, params: Params) -> Json:
        charge = self._refundable_charge(params)
        amount = int_param(params, "amount", required=False)
        reason = choice(params, "reason", _REFUND_REASONS)
        reverse = flag(params, "reverse_transfer")
        flag(params, "refund_application_fee")
        if reverse and charge["transfer_data"] is None:
            raise invalid("This charge has no transfer to reverse.", "reverse_transfer")
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise unexpected_state(
                f"Charge {charge['id']} has already been refunded.", "charge_already_refunded"
            )
        if amount is not None and amount > remaining:
            raise unexpected_state(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                "amount_too_large",
            )
        refunded = amount or remaining
        charge["amount_refunded"] += refunded
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._emit("charge.refunded", charge, charge["payment_intent"])
        refund: Json = {
            "id": new_id("re_"),
            "object": "refund",
            "amount": refunded,
            "charge": charge["id"],
            "created": unix_now(),
            "currency": charge["currency"],
            "metadata": sub_params(params, "metadata"),
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "succeeded",
            "transfer_reversal": new_id("trr_") if reverse else None,
        }
        self.refunds.append(refund)
        return refund

    def dispute(self, intent: Json, reason: str | None) -> Json:
        """The customer's bank disputes the charge. Like Stripe's, the dispute does not carry
        the charge's metadata: only its charge and PaymentIntent say what it is about."""
        if intent["latest_charge"] is None:
            raise unexpected_state("This PaymentIntent has no charge to dispute.")
        charge = self.charges[intent["latest_charge"]]
        dispute: Json = {
            "id": new_id("dp_"),
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
                raise no_such("payment_intent", params["payment_intent"], "payment_intent")
            if intent["latest_charge"] is None:
                raise unexpected_state(
                    "This PaymentIntent does not have a successful charge to refund."
                )
            return self.charges[intent["latest_charge"]]
        if "charge" in params:
            charge = self.charges.get(params["charge"])
            if charge is None:
                raise no_such("charge", params["charge"], "charge")
            return charge
        raise invalid(
            "One of the following params should be provided for this request: "
            "payment_intent or charge.",
            None,
            "parameter_missing",
        )

    def _emit(self, event_type: str, obj: Json, ordering_key: str) -> None:
        """A snapshot event, as Stripe sends them: the object as it is at this moment."""
        event: Json = {
            "id": new_id("evt_"),
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
