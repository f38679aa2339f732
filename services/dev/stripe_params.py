"""Parameters as Stripe reads them (form-encoded, one level of nesting) and its error envelope,
for the simulator (services/dev/stripe_sim.py): the same refusals, codes and messages the
official SDK raises as exceptions, so the service's handling of them is what runs in production."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from infra.codes import random_code
from services.dev.stripe_webhooks import Json

Params = Mapping[str, str]

_ALPHABET = string.ascii_letters + string.digits
_ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9_]+")
SUCCEEDING_CARDS = frozenset({"pm_card_visa", "pm_card_mastercard"})
DECLINES = {
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}


def new_id(prefix: str, length: int = 24) -> str:
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


def invalid(message: str, param: str | None, code: str = "parameter_invalid") -> StripeApiError:
    return StripeApiError(
        400, "invalid_request_error", message, code=code, param=param, stored=False
    )


def no_such(kind: str, object_id: str, param: str) -> StripeApiError:
    return StripeApiError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
        stored=False,
    )


def unexpected_state(message: str, code: str = "payment_intent_unexpected_state") -> StripeApiError:
    return StripeApiError(400, "invalid_request_error", message, code=code)


def sub_params(params: Params, name: str) -> dict[str, str]:
    """`metadata[purchase_token]=x` → {"purchase_token": "x"}: one level of Stripe's form
    nesting, which is all the modelled parameters use."""
    prefix = f"{name}["
    return {
        key[len(prefix) : -1]: value
        for key, value in params.items()
        if key.startswith(prefix) and key.endswith("]")
    }


def int_param(params: Params, name: str, *, required: bool) -> int | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise invalid(f"Missing required param: {name}.", name, "parameter_missing")
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise invalid(f"Invalid integer: {raw}", name, "parameter_invalid_integer")
    if int(raw) < 1:
        raise invalid("Amount must be at least 1.", name, "amount_too_small")
    return int(raw)


def flag(params: Params, name: str) -> bool:
    raw = params.get(name, "false")
    if raw not in ("true", "false"):
        raise invalid(f"Invalid boolean: {raw}", name)
    return raw == "true"


def choice(params: Params, name: str, allowed: frozenset[str]) -> str | None:
    value = params.get(name)
    if value is not None and value not in allowed:
        raise invalid(f"Invalid {name}: must be one of {', '.join(sorted(allowed))}", name)
    return value


def account(params: Params, name: str) -> str | None:
    """Any well-formed `acct_...` id is a connected account of the simulated platform."""
    value = params.get(name)
    if value is not None and not _ACCOUNT_ID.fullmatch(value):
        raise invalid(f"No such destination: '{value}'", name, "resource_missing")
    return value


def card_param(value: str | None) -> str | None:
    if value is not None and value not in SUCCEEDING_CARDS and value not in DECLINES:
        raise invalid(f"No such PaymentMethod: '{value}'", "payment_method", "resource_missing")
    return value
