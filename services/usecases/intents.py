"""The PaymentIntents of the purchases this process opens: created at Stripe under the purchase's
token as idempotency key (a retry never makes a second one), cancelled when no buyer can ever
have seen one, and each purchase as stored with its intent kept for the report of its payment."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import structlog

from domain import purchasing
from domain.errors import DomainError
from domain.purchasing import PurchaseOpened, PurchaseState
from infra.eventstore import Metadata
from infra.payments import PaymentError, PaymentIntentRef, Payments
from services.usecases.recent import Recent

log = structlog.get_logger(__name__)

# Purchases this process opened and took the payment of, kept for the report of that payment.
REMEMBERED_OPENINGS = 10_000


class StripeFailed(DomainError):
    code = "stripe_error"


class Opening(NamedTuple):
    """A purchase as this process stored it: its state, its stream's version then and the
    metadata it was stored with."""

    state: PurchaseState
    version: int
    metadata: Metadata


class Intents:
    def __init__(self, payments: Payments | None) -> None:
        self.payments = payments
        self._openings: Recent[str, Opening] = Recent(REMEMBERED_OPENINGS)
        self._cancelling: set[asyncio.Task[None]] = set()

    def can_charge(self, opened: PurchaseOpened) -> bool:
        """Whether Stripe takes this purchase's payment: there is something to pay, and the
        service and the organization can take payments."""
        return (
            self.payments is not None
            and opened.stripe_account_id is not None
            and opened.pricing.total_cents > 0
        )

    async def create(self, opened: PurchaseOpened) -> PaymentIntentRef:
        assert self.payments is not None and opened.stripe_account_id is not None
        try:
            return await self.payments.create_intent(
                purchase_token=opened.token,
                amount_cents=opened.pricing.total_cents,
                currency=opened.pricing.currency.lower(),
                connected_account_id=opened.stripe_account_id,
                description=f"{opened.product_name} ({len(opened.tickets)} tickets)",
            )
        except PaymentError as exc:
            log.warning("payment_intent_failed", token=opened.token, error=str(exc))
            raise StripeFailed("the payment could not be started; nothing was held") from None

    def abandon(self, intent_id: str) -> None:
        """Cancels an intent no buyer was given, in the background (best effort: one left
        behind can never be paid, as nobody has its client secret). The one cancel made from
        a request's path: no stored event can decide it, as the purchase was never stored; and
        should the append have been stored after all (its answer lost), the purchase was never
        shown to anyone, simply cannot be paid, and expires."""
        task = asyncio.create_task(self._cancel(intent_id))
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def _cancel(self, intent_id: str) -> None:
        assert self.payments is not None
        try:
            await self.payments.cancel_intent(intent_id)
        except PaymentError as exc:
            log.warning("payment_intent_cancel_failed", intent_id=intent_id, error=str(exc))

    def remember(self, opening: Opening) -> PurchaseState:
        return self._openings.keep(opening.state.opened.token, opening).state

    def opening(self, token: str) -> Opening | None:
        """The purchase as this process stored it when it took its payment, given once: Stripe's
        report of that payment is decided on it without reading the stream first (about half
        of a webhook's time in an on-sale, behind the buyers' polls). Its version makes the
        append fail should anything have changed the stream since; the report is then decided
        again on the stream as read."""
        return self._openings.pop(token, None)

    async def close(self) -> None:
        await asyncio.gather(*self._cancelling, return_exceptions=True)


def intent_created(
    opened: PurchaseOpened, intent: PaymentIntentRef
) -> purchasing.PaymentIntentCreated:
    return purchasing.PaymentIntentCreated(
        token=opened.token, intent_id=intent.id, client_secret=intent.client_secret
    )
