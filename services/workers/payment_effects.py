"""The payments worker: makes at Stripe what stored purchase events decided, never before they
are stored. The payment_effects projection queues a row in `payment_outbox` per decision:

- `refund`: a LatePaymentRefundDecided. The refund is made with the idempotency key
  `refund-<purchase token>`, so a retry (after a crash, a lost answer, a lease that ran out) is
  Stripe's replay of the same refund, never a second one; its id is then recorded on the
  purchase as LatePaymentRefunded.
- `cancel_intent`: a purchase that expired or was cancelled unpaid; its PaymentIntent is
  cancelled (key `cancel-<intent id>`) so the buyer can no longer pay it. Stripe refuses when
  the buyer paid first; that payment's `payment_intent.succeeded` then takes the late-payment
  road (the same seats held again if free, otherwise a refund decided and made here).

Rows are claimed in a short transaction with `FOR UPDATE SKIP LOCKED` (a lease: several workers
may run), the call to Stripe is made outside it, and a failure is retried with backoff. What
Stripe refuses for good (the intent is no longer cancelable, the charge already refunded) ends
the row with that outcome; anything else is tried again until `max_attempts`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from domain import purchasing, streams
from domain.purchasing import PurchaseState
from infra.eventstore import ConcurrencyError, Metadata, PendingAppend, append, read_stream
from infra.payment_outbox import CHANNEL
from infra.payments import PaymentError, Payments
from infra.supervise import serve_forever

log = structlog.get_logger(__name__)

ERROR_LIMIT = 1000
RECORD_ATTEMPTS = 5
# Stripe's answers that no retry changes: the row ends with them as its outcome.
FINAL_REFUSALS = frozenset(
    {"payment_intent_unexpected_state", "charge_already_refunded", "resource_missing"}
)

_CLAIM = """
UPDATE payment_outbox SET attempts = attempts + 1,
    next_attempt_at = now() + make_interval(secs => $2::float8)
WHERE id IN (
    SELECT id FROM payment_outbox WHERE done_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, purchase_token, intent_id, kind, attempts
"""
_DONE = """
UPDATE payment_outbox SET done_at = now(), outcome = $3, next_attempt_at = NULL
WHERE id = $1 AND attempts = $2 AND done_at IS NULL
"""
# The claim's attempt count guards the row: a worker whose lease ran out and whose row was
# claimed again must not overwrite the newer attempt's schedule.
_FAILED = """
UPDATE payment_outbox SET last_error = $3,
    next_attempt_at = now() + make_interval(secs => $4::float8)
WHERE id = $1 AND attempts = $2 AND done_at IS NULL
"""
_GIVEN_UP = """
UPDATE payment_outbox SET last_error = $3, next_attempt_at = NULL
WHERE id = $1 AND attempts = $2 AND done_at IS NULL
"""


class PaymentEffects:
    def __init__(
        self,
        pool: asyncpg.Pool,
        payments: Payments,
        *,
        poll_interval: float = 1.0,
        backoff: Sequence[float] = (5, 30, 120, 600, 1800),
        max_attempts: int = 20,
        batch_size: int = 10,
        lease: float = 300.0,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        self._pool = pool
        self._payments = payments
        self._poll = poll_interval
        self._backoff = tuple(backoff)
        self._max_attempts = max_attempts
        self._batch_size = batch_size
        self._lease = lease
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Work until cancelled; database outages are waited out, never fatal."""
        await serve_forever(
            self._serve, "payment_effects", first_pause=self._poll, longest_pause=self._poll
        )

    async def _serve(self) -> None:
        """LISTEN for new rows so a decision is carried out at once; the poll interval is the
        fallback for retries falling due and for a missed notification."""
        async with self._pool.acquire() as listener:
            await listener.add_listener(CHANNEL, self._on_notify)
            try:
                while not listener.is_closed():
                    self._wake.clear()
                    while await self.carry_out_due() == self._batch_size:
                        pass
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await self._wake.wait()
                raise ConnectionError("payment worker lost its LISTEN connection")
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(CHANNEL, self._on_notify)

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def carry_out_due(self) -> int:
        """One pass: claim the rows due now and carry them out concurrently; returns how many."""
        claimed = await self._pool.fetch(_CLAIM, self._batch_size, self._lease)
        await asyncio.gather(*(self._carry_out(row) for row in claimed))
        return len(claimed)

    async def _carry_out(self, row: asyncpg.Record) -> None:
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
            else:
                outcome = await self._cancel(row["purchase_token"], row["intent_id"])
        except PaymentError as exc:
            if exc.code not in FINAL_REFUSALS:
                await self._failed(row, exc, fields)
                return
            outcome = f"refused: {exc.code}"
            log.warning("payment_effect_refused", error=exc.message, code=exc.code, **fields)
        except Exception as exc:
            await self._failed(row, exc, fields)
            return
        try:
            await self._pool.execute(_DONE, row["id"], row["attempts"], outcome)
        except Exception as exc:
            # The lease runs out and the row is tried again: Stripe replays it by its key.
            log.warning("payment_effect_outcome_not_recorded", error=repr(exc), **fields)
            return
        log.info("payment_effect_done", outcome=outcome, **fields)

    async def _refund(self, token: str, intent_id: str) -> str:
        state = await self._purchase(token)
        if state is None or state.refund_decision is None:
            return "no_refund_decided"
        if state.refund_id is not None:
            return "already_refunded"
        refund_id = await self._payments.refund(intent_id, idempotency_key=f"refund-{token}")
        await self._record_refund(token, refund_id)
        return "refunded"

    async def _record_refund(self, token: str, refund_id: str) -> None:
        """LatePaymentRefunded on the purchase, once, at the version it was decided on."""
        stream = streams.purchase(token)
        meta = Metadata(actor="payments", causation_id=f"refund-{token}", correlation_id=token)
        for _ in range(RECORD_ATTEMPTS):
            recorded = await read_stream(self._pool, stream)
            state = purchasing.replay_purchase(r.event() for r in recorded)
            assert state is not None
            events = purchasing.record_refund(state, refund_id)
            if not events:
                return
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

    async def _failed(self, row: asyncpg.Record, exc: Exception, fields: dict[str, Any]) -> None:
        """Schedule the next attempt by the backoff table, or give up after max_attempts."""
        error = f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT]
        attempts = row["attempts"]
        try:
            if attempts >= self._max_attempts:
                await self._pool.execute(_GIVEN_UP, row["id"], attempts, error)
                log.error("payment_effect_abandoned", error=error, **fields)
                return
            delay = self._backoff[min(attempts, len(self._backoff)) - 1]
            await self._pool.execute(_FAILED, row["id"], attempts, error, float(delay))
        except Exception as record_exc:
            log.warning("payment_effect_outcome_not_recorded", error=repr(record_exc), **fields)
            return
        log.warning("payment_effect_failed", error=error, retry_in=delay, **fields)
