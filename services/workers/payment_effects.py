"""The payments worker: makes at Stripe what stored purchase events decided, never before they
are stored. The payment_effects projection queues a row in `payment_outbox` per decision:

- `refund`: a LatePaymentRefundDecided. The refund is made with the idempotency key
  `refund-<purchase token>`, so a retry (after a crash, a lost answer, a lease that ran out) is
  Stripe's replay of the same refund, never a second one; its id is then recorded on the
  purchase as LatePaymentRefunded.
- `ticket_refund`: a RefundDecided (tickets of a paid purchase). Its amount is refunded with
  the key `refund-<refund id>`, reversing the transfer to the connected account, and Stripe's
  refund id recorded on the purchase as RefundMade.
- `cancel_intent`: a purchase that expired or was cancelled unpaid; its PaymentIntent is
  cancelled (key `cancel-<intent id>`) so the buyer can no longer pay it. Stripe refuses when
  the buyer paid first; that payment's `payment_intent.succeeded` then takes the late-payment
  road (the same seats held again if free, otherwise a refund decided and made here).

Rows are claimed in a short transaction with `FOR UPDATE SKIP LOCKED` (a lease: several workers
may run), the call to Stripe is made outside it, and a failure is retried with backoff. What
Stripe refuses for good (the intent is no longer cancelable) ends the row with that outcome; a
refund of money given back already in Stripe's dashboard refunds what is left, or records the
dashboard's refund as the one made; anything else is tried again until `max_attempts`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from domain import purchasing, refunds, streams
from domain.events import Event
from domain.purchasing import PurchaseState, RefundDecided
from infra.eventstore import (
    ConcurrencyError,
    Metadata,
    PendingAppend,
    RecordedEvent,
    append,
    read_stream,
)
from infra.payment_outbox import CHANNEL
from infra.payments import PaymentError, Payments
from services.workers.outbox import OutboxTable, OutboxWorker

log = structlog.get_logger(__name__)

RECORD_ATTEMPTS = 5
PAYMENTS = Metadata(actor="payments")
# Stripe's answers that no retry changes: the row ends with them as its outcome.
FINAL_REFUSALS = frozenset({"payment_intent_unexpected_state", "resource_missing"})
# Stripe's answers to a refund of money given back already, in part or whole (its dashboard).
GIVEN_BACK_ALREADY = frozenset({"charge_already_refunded", "amount_too_large"})
PAYMENT_OUTBOX = OutboxTable(
    "payment_outbox", CHANNEL, "done_at", "purchase_token, intent_id, kind, refund_id"
)
_DONE = """
UPDATE payment_outbox SET done_at = now(), outcome = $3, next_attempt_at = NULL
WHERE id = $1 AND attempts = $2 AND done_at IS NULL
"""


class PaymentEffects(OutboxWorker):
    name = "payment_effect"

    def __init__(self, pool: asyncpg.Pool, payments: Payments, **options: Any) -> None:
        super().__init__(pool, PAYMENT_OUTBOX, **options)
        self._payments = payments

    async def carry_out(self, row: asyncpg.Record) -> None:
        fields = {
            "outbox_id": row["id"],
            "kind": row["kind"],
            "token": row["purchase_token"],
            "intent_id": row["intent_id"],
            "attempt": row["attempts"],
        }
        try:
            if row["kind"] == "refund":
                outcome = await self._refund(row["purchase_token"], row["intent_id"])
            elif row["kind"] == "ticket_refund":
                outcome = await self._ticket_refund(
                    row["purchase_token"], row["intent_id"], row["refund_id"]
                )
            else:
                outcome = await self._cancel(row["purchase_token"], row["intent_id"])
        except PaymentError as exc:
            if exc.code not in FINAL_REFUSALS:
                await self.failed(row, exc, fields)
                return
            outcome = f"refused: {exc.code}"
            log.warning("payment_effect_refused", error=exc.message, code=exc.code, **fields)
        except Exception as exc:
            await self.failed(row, exc, fields)
            return
        try:
            await self.record(_DONE, row["id"], row["attempts"], outcome)
        except Exception as exc:
            # Tried again once the lease runs out: Stripe replays it by its key.
            self.not_recorded(exc, fields)
            return
        log.info("payment_effect_done", outcome=outcome, **fields)

    async def _refund(self, token: str, intent_id: str) -> str:
        state = await self._purchase(token)
        if state is None or state.refund_decision is None:
            return "no_refund_decided"
        if state.refund_id is not None:
            return "already_refunded"
        key = f"refund-{token}"
        try:
            refund_id = await self._payments.refund(intent_id, idempotency_key=key)
        except PaymentError as exc:
            if exc.code != "charge_already_refunded":
                raise
            _, newest = await self._payments.refunded_so_far(intent_id)
            refund_id = newest or ""
        await self._record(token, None, lambda s: purchasing.record_refund(s, refund_id))
        return "refunded"

    async def _ticket_refund(self, token: str, intent_id: str, refund_id: str) -> str:
        state = await self._purchase(token)
        decided = state.ticket_refunds.get(refund_id) if state else None
        if state is None or decided is None:
            return "no_refund_decided"
        if refund_id in state.refunds_made:
            return "already_refunded"
        key = f"refund-{refund_id}"
        outcome = "refunded"
        try:
            made = await self._payments.refund(
                intent_id, idempotency_key=key, amount_cents=decided.amount_cents
            )
        except PaymentError as exc:
            if exc.code not in GIVEN_BACK_ALREADY:
                raise
            outcome, made = await self._refund_rest(state, intent_id, refund_id, decided)
        await self._record(token, refund_id, lambda s: refunds.record_made(s, refund_id, made))
        return outcome

    async def _refund_rest(
        self, state: PurchaseState, intent_id: str, refund_id: str, decided: RefundDecided
    ) -> tuple[str, str]:
        """Stripe has less left to give back than the decision asks: part of the payment was
        refunded in its dashboard while the decision waited here (its report then added
        nothing to what the purchase counted refunded). The buyer is owed what the decision
        says, at most what was paid: what is left is refunded, under a key of its own; with
        nothing left, the newest refund at Stripe stands for it. The decision is made either
        way, never left pending."""
        refunded, newest = await self._payments.refunded_so_far(intent_id)
        left = state.opened.pricing.total_cents - refunded
        if left <= 0:
            return "refunded_at_stripe", newest or ""
        rest = await self._payments.refund(
            intent_id,
            idempotency_key=f"refund-{refund_id}-rest",
            amount_cents=min(left, decided.amount_cents),
        )
        return "refunded_rest", rest

    async def _record(
        self, token: str, refund_id: str | None, decide: Callable[[PurchaseState], list[Event]]
    ) -> None:
        """What Stripe did, on the purchase, once (`decide` finds nothing the second time),
        caused by the decision it carried out (`_decision`), in the purchase's chain."""
        stream = streams.purchase(token)
        for _ in range(RECORD_ATTEMPTS):
            recorded = await read_stream(self._pool, stream)
            state = purchasing.replay_purchase(r.event() for r in recorded)
            assert state is not None
            events = decide(state)
            if not events:
                return
            meta = PAYMENTS.caused_by(_decision(recorded, refund_id))
            try:
                await append(self._pool, [PendingAppend(stream, len(recorded), events)], meta)
                return
            except ConcurrencyError:
                continue
        raise ConcurrencyError(stream, "recording the refund")

    async def _cancel(self, token: str, intent_id: str) -> str:
        """Only while the purchase is ended and nothing was paid: one paid meanwhile (its late
        payment held the seats again, or is being refunded) keeps its intent, which Stripe
        would refuse to cancel anyway."""
        state = await self._purchase(token)
        if state is None or state.status not in ("expired", "cancelled"):
            return "not_ended"
        if state.refunded:
            return "paid_before_cancel"
        await self._payments.cancel_intent(intent_id, idempotency_key=f"cancel-{intent_id}")
        return "canceled"

    async def _purchase(self, token: str) -> PurchaseState | None:
        recorded = await read_stream(self._pool, streams.purchase(token))
        return purchasing.replay_purchase(r.event() for r in recorded)


def _decision(recorded: list[RecordedEvent], refund_id: str | None) -> RecordedEvent:
    """The stored decision a refund carries out: the RefundDecided of `refund_id`, or for None
    the purchase's LatePaymentRefundDecided (the worker acts only once it is stored)."""
    for event in recorded:
        if refund_id is None and event.type == "LatePaymentRefundDecided":
            return event
        if event.type == "RefundDecided":
            decided = event.event()
            if isinstance(decided, purchasing.RefundDecided) and decided.refund_id == refund_id:
                return event
    raise LookupError(f"no refund decision {refund_id or 'for the late payment'} stored")
