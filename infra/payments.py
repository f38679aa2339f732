"""The payment adapter. The same code talks to real Stripe or, by a different base address, to
the local simulator (services/dev/stripe_sim.py). PaymentIntents are cancelled and refunded, and
webhooks verified, through the official `stripe` SDK. They are created, once per purchase and
on the buyer's way, with one form POST of Stripe's API on a session of this adapter's own, with
the SDK's headers, retries and error codes: the SDK's request machinery (a platform description
gathered for every request's headers, its logging, its response objects) cost the gateway as
much CPU as the rest of the call (in the paid-order benchmark, 17-25 ms of `POST /purchases` p99).

Money flow: destination charges. The PaymentIntent lives on the platform account and records
the organization's connected account as `transfer_data[destination]`, so Stripe transfers the
charge to that account when it succeeds (no `on_behalf_of`: that would also make the connected
account the merchant of record and require its card_payments capability). Refunds reverse the
transfer, so the organization, not the platform, gives the money back."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import aiohttp
import msgspec
import stripe
from stripe import RequestOptions
from stripe.params import RefundCreateParams

from domain.purchasing import PaymentReport
from infra.metrics import STRIPE_ERRORS, STRIPE_LATENCY
from infra.settings import Settings

SIMULATOR_API_KEY = "sk_test_linjerum_simulator"
SIMULATOR_PUBLISHABLE_KEY = "pk_test_linjerum_simulator"
SIMULATOR_WEBHOOK_SECRET = "whsec_linjerum_simulator"
SIMULATOR_HOST = "127.0.0.1"
STRIPE_API_BASE = "https://api.stripe.com"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
NETWORK_RETRIES = 2
# Waits before a retry, as the SDK's: 0.5 s doubled per retry, at most 5 s, less up to half.
RETRY_DELAY = 0.5
RETRY_DELAY_MAX = 5.0


class PaymentError(Exception):
    """Any failure from Stripe, with Stripe's error code (e.g. card_declined,
    payment_intent_unexpected_state, idempotency_error) or the error's kind when it has none
    (api_connection_error, authentication_error, api_error)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidSignature(Exception):
    """A webhook whose Stripe-Signature does not verify: not from Stripe, altered, or stale."""


class InvalidPayload(Exception):
    """A webhook whose signature verifies but whose body is not a Stripe event the service can
    read: retrying it cannot help, so it is refused rather than failed."""


class PaymentIntentRef(msgspec.Struct, frozen=True, kw_only=True):
    """What the buyer's client needs to pay: the intent and its client secret."""

    id: str
    client_secret: str
    status: str


# Stripe's event types that report on a purchase's payment, in the domain's words.
# The events whose objects are read (and logged) though the service may not act on them.
_ABOUT_PAYMENTS = ("payment_intent.", "charge.")
_REPORTS: dict[str, PaymentReport] = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "charge.refunded": "refunded",
    "charge.dispute.created": "disputed",
}


class WebhookEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a Stripe event the service acts on. `report` is what it says of the
    payment (None for an event that reports nothing the purchase acts on); `intent_id` is
    empty for an event not about a PaymentIntent; `amount` is the intent's amount, for a
    charge the amount refunded so far, for a dispute the amount disputed, in `currency` (as
    Stripe writes it, lower case; None where the object has none). `object_id` is the
    id of what the event is about (a dispute's, say), `reason` a dispute's reason. A dispute
    does not carry the charge's metadata: its purchase is found by its intent
    (`purchase_token_of`)."""

    id: str
    type: str
    report: PaymentReport | None
    intent_id: str
    purchase_token: str | None
    status: str | None
    amount: int
    currency: str | None = None
    object_id: str = ""
    reason: str | None = None


class _CreatedIntent(msgspec.Struct):
    """What a created PaymentIntent's answer is read for (the rest is not decoded)."""

    id: str
    status: str
    client_secret: str | None = None


class _ErrorDetail(msgspec.Struct):
    type: str = "api_error"
    code: str | None = None
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


_created = msgspec.json.Decoder(_CreatedIntent)
_refusal = msgspec.json.Decoder(_ErrorBody)


def _retries(status: int, should_retry: str | None) -> bool:
    """Stripe's rule, as the SDK applies it: the Stripe-Should-Retry header when given, else a
    conflict (409) or a server error."""
    if should_retry in ("true", "false"):
        return should_retry == "true"
    return status == 409 or status >= 500


def _refused(status: int, body: bytes, action: str) -> PaymentError:
    """Stripe's error answer as the SDK would map it: the error's code, else its type (401: an
    authentication error)."""
    try:
        detail = _refusal.decode(body).error
    except msgspec.DecodeError:
        detail = _ErrorDetail()
    kind = "authentication_error" if status == 401 else detail.type
    return PaymentError(detail.message or f"{action} failed", detail.code or kind)


class _EventObject(msgspec.Struct):
    """Lenient where Stripe's objects differ (a balance has no id, an amount may be null): an
    event of a type the service does not act on is answered `ignored`, never refused."""

    id: str = ""
    object: str = ""
    status: str | None = None
    amount: int | None = 0
    amount_refunded: int | None = 0
    currency: str | None = None
    payment_intent: str | None = None
    reason: str | None = None
    metadata: dict[str, str] | None = None


class _EventData(msgspec.Struct):
    object: _EventObject


class _Kind(msgspec.Struct):
    """What an event is, read first: one about neither a PaymentIntent nor a charge is not
    read further, whatever its object looks like (an amount that is an object, metadata null)."""

    id: str
    type: str
    # Kept undecoded: read only for an event about a PaymentIntent or a charge.
    data: msgspec.Raw


def _kind(exc: stripe.StripeError) -> str:
    if isinstance(exc, stripe.AuthenticationError):
        return "authentication_error"
    if isinstance(exc, stripe.APIConnectionError):
        return "api_connection_error"
    if exc.error is not None and exc.error.type:
        return exc.error.type
    return "api_error"


@contextlib.contextmanager
def _mapped_errors(call: str, action: str) -> Iterator[None]:
    """SDK exceptions become PaymentError; Stripe's messages never contain a full key. Each
    call is timed and its failures counted by `call` for /metrics."""
    started = time.perf_counter()
    try:
        yield
    except stripe.StripeError as exc:
        message = exc.user_message or f"{action} failed"
        code = exc.code or _kind(exc)
        STRIPE_ERRORS.labels(call, code).inc()
        raise PaymentError(message, code) from exc
    except PaymentError as exc:
        STRIPE_ERRORS.labels(call, exc.code).inc()
        raise
    finally:
        STRIPE_LATENCY.labels(call).observe(time.perf_counter() - started)


class Payments:
    """Stripe through the SDK. `api_base` None means real Stripe; anything else (the simulator,
    stripe-mock) is reached with the same calls."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None,
        publishable_key: str,
        webhook_secret: str,
    ) -> None:
        self.publishable_key = publishable_key
        self._webhook_secret = webhook_secret
        self._api_base = api_base or STRIPE_API_BASE
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Stripe-Version": stripe.api_version,
            "User-Agent": f"Stripe/v1 PythonBindings/{stripe.VERSION} linjerum",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self._session: aiohttp.ClientSession | None = None
        self._http = stripe.AIOHTTPClient(timeout=REQUEST_TIMEOUT)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http,
            max_network_retries=NETWORK_RETRIES,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Payments:
        """Real Stripe when STRIPE_SECRET_KEY is set; otherwise the simulator `linjerum run`
        starts on STRIPE_SIM_PORT, with its fixed development keys."""
        sim = settings.uses_simulator
        sim_base = f"http://{SIMULATOR_HOST}:{settings.stripe_sim_port}" if sim else None
        return cls(
            settings.stripe_secret_key or SIMULATOR_API_KEY,
            api_base=settings.stripe_api_base or sim_base,
            publishable_key=settings.stripe_publishable_key
            or (SIMULATOR_PUBLISHABLE_KEY if sim else ""),
            webhook_secret=settings.stripe_webhook_secret
            or (SIMULATOR_WEBHOOK_SECRET if sim else ""),
        )

    async def close(self) -> None:
        await self._http.close_async()
        if self._session is not None:
            await self._session.close()

    async def create_intent(
        self,
        *,
        purchase_token: str,
        amount_cents: int,
        currency: str,
        connected_account_id: str,
        description: str,
    ) -> PaymentIntentRef:
        """One PaymentIntent per purchase: the purchase token is the idempotency key, so a
        retried request (ours or the SDK's) returns the same intent instead of a second one.
        Stripe keeps keys for 24 hours.

        Sent as one form POST (see the module's docstring), and only the three fields the buyer
        needs are read from the answer."""
        form = {
            "amount": str(amount_cents),
            "currency": currency.lower(),
            "description": description,
            "metadata[purchase_token]": purchase_token,
            "transfer_data[destination]": connected_account_id,
            "automatic_payment_methods[enabled]": "true",
        }
        action = "creating the PaymentIntent"
        with _mapped_errors("create_intent", action):
            body = await self._post("/v1/payment_intents", form, purchase_token, action)
            try:
                intent = _created.decode(body)
            except msgspec.DecodeError:
                raise PaymentError("Stripe answered without a PaymentIntent", "api_error") from None
        return PaymentIntentRef(
            id=intent.id, client_secret=intent.client_secret or "", status=intent.status
        )

    async def _post(
        self, path: str, form: dict[str, str], idempotency_key: str, action: str
    ) -> bytes:
        """The answer of a 2xx, after the SDK's retries (NETWORK_RETRIES, by `_retries`, with
        the same idempotency key, so a retry never makes a second object); else PaymentError
        for the last attempt's failure."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
        headers = {**self._headers, "Idempotency-Key": idempotency_key}
        # Encoded here: aiohttp turns a dict into a FormData first, a third of the call in profiles.
        data = urlencode(form).encode()
        unreachable = PaymentError(
            f"{action} failed: Stripe could not be reached", "api_connection_error"
        )
        failure = unreachable
        for attempt in range(NETWORK_RETRIES + 1):
            if attempt:
                delay = min(RETRY_DELAY * 2 ** (attempt - 1), RETRY_DELAY_MAX)
                await asyncio.sleep(max(RETRY_DELAY, delay * random.uniform(0.5, 1.0)))
            try:
                async with self._session.post(
                    self._api_base + path, data=data, headers=headers
                ) as response:
                    body = await response.read()
                    status = response.status
                    should_retry = response.headers.get("Stripe-Should-Retry")
            except (aiohttp.ClientError, TimeoutError):
                failure = unreachable
                continue
            if 200 <= status < 300:
                return body
            failure = _refused(status, body, action)
            if not _retries(status, should_retry):
                break
        raise failure

    async def cancel_intent(self, intent_id: str, *, idempotency_key: str | None = None) -> None:
        """Raises PaymentError when Stripe refuses (e.g. the intent already succeeded); whether
        that matters is the caller's decision. With a key, a retried cancel replays the
        first one's answer."""
        options: RequestOptions = {"idempotency_key": idempotency_key} if idempotency_key else {}
        with _mapped_errors("cancel_intent", "cancelling the PaymentIntent"):
            await self._client.v1.payment_intents.cancel_async(intent_id, options=options)

    async def refund(
        self, intent_id: str, *, idempotency_key: str, amount_cents: int | None = None
    ) -> str:
        """Refunds `amount_cents` of the intent's charge (all of it for None) and returns the
        refund id; the key makes a retried refund a replay rather than a second refund. The
        transfer to the connected account is reversed by the same amount, so the organization
        gives the money back; the platform takes no application fee on these charges, so there
        is none to refund (`refund_application_fee` false): the organization's fee policy is in
        the amount."""
        params: RefundCreateParams = {
            "payment_intent": intent_id,
            "reverse_transfer": True,
            "refund_application_fee": False,
        }
        if amount_cents is not None:
            params["amount"] = amount_cents
        with _mapped_errors("refund", "refunding the PaymentIntent"):
            refund = await self._client.v1.refunds.create_async(
                params, {"idempotency_key": idempotency_key}
            )
        return refund.id

    async def refunded_so_far(self, intent_id: str) -> tuple[int, str | None]:
        """How much of the intent's payment Stripe has given back in all (refunds made here and
        in its dashboard alike), and the newest refund's id."""
        with _mapped_errors("list_refunds", "reading the PaymentIntent's refunds"):
            found = await self._client.v1.refunds.list_async(
                {"payment_intent": intent_id, "limit": 100}
            )
        given = [r for r in found.data if r.status in ("succeeded", "pending")]
        newest = max(given, key=lambda r: r.created, default=None)
        return sum(r.amount for r in given), None if newest is None else newest.id

    async def purchase_token_of(self, intent_id: str) -> str | None:
        """The purchase a PaymentIntent was created for (its metadata), for the Stripe events
        that do not carry it (disputes); None for one Stripe does not know (not ours)."""
        try:
            with _mapped_errors("read_intent", "reading the PaymentIntent"):
                response = await self._client.raw_request_async(
                    "get", f"/v1/payment_intents/{intent_id}"
                )
        except PaymentError as exc:
            if exc.code == "resource_missing":
                return None
            raise
        intent = response.data
        metadata = intent.get("metadata") if isinstance(intent, dict) else None
        return metadata.get("purchase_token") if isinstance(metadata, dict) else None

    def parse_webhook(self, payload: bytes, signature: str) -> WebhookEvent:
        """Verifies the Stripe-Signature header (HMAC and a 5-minute timestamp tolerance)
        before reading anything from the payload."""
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature, self._webhook_secret, stripe.Webhook.DEFAULT_TOLERANCE
            )
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature(exc.user_message or "invalid signature") from exc
        except (UnicodeDecodeError, TypeError) as exc:
            # The SDK reads the body as UTF-8 and compares the header's signatures as ASCII:
            # a body or a signature that is neither was not signed by Stripe.
            raise InvalidSignature("the signature does not verify this body") from exc
        if b"\\u0000" in payload:
            raise InvalidPayload("not a Stripe event: a NUL character")
        try:
            kind = msgspec.json.decode(payload, type=_Kind)
            report = _REPORTS.get(kind.type)
            if report is None and not kind.type.startswith(_ABOUT_PAYMENTS):
                return WebhookEvent(
                    id=kind.id,
                    type=kind.type,
                    report=None,
                    intent_id="",
                    purchase_token=None,
                    status=None,
                    amount=0,
                )
            obj = msgspec.json.decode(kind.data, type=_EventData).object
        except msgspec.DecodeError as exc:
            raise InvalidPayload(f"not a Stripe event: {exc}") from exc
        except RecursionError:
            raise InvalidPayload("not a Stripe event: nested too deeply") from None
        if report is not None and not obj.id:
            raise InvalidPayload(f"not a Stripe event: a {kind.type} of an object with no id")
        is_intent = obj.object == "payment_intent"
        return WebhookEvent(
            id=kind.id,
            type=kind.type,
            report=report,
            intent_id=obj.id if is_intent else obj.payment_intent or "",
            purchase_token=(obj.metadata or {}).get("purchase_token"),
            status=obj.status,
            amount=(obj.amount_refunded if obj.object == "charge" else obj.amount) or 0,
            currency=obj.currency,
            object_id=obj.id,
            reason=obj.reason,
        )
