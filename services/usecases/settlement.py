"""Settling what Stripe reports about a purchase's payment, each Stripe event once: a payment
that succeeded marks the purchase paid and issues its tickets, one that failed says so, and
money that arrives after the purchase let go of its seats sells the same seats again if they
are still free, else decides to give it back. Refunds and disputes bring their own decisions
(services/usecases/refunds.py) and are applied once the same way."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog

from domain import discounts, purchase_settling, purchasing, sale_commands, sales, streams
from domain.inventory import attraction_days, holds
from domain.purchasing import PurchaseState
from infra.eventstore import NO_STREAM, ConcurrencyError, Metadata, PendingAppend
from infra.payments import WebhookEvent
from services.usecases.intents import Opening
from services.usecases.purchases import Purchases
from services.usecases.sales_desks import inventory_desk
from services.usecases.ticketing import purchase_from

log = structlog.get_logger(__name__)

MAX_SETTLE_ATTEMPTS = 5

# What a Stripe event changes of a purchase (at `version`), stored with `meta`; says what it did.
Settle = Callable[[PurchaseState, int, WebhookEvent, Metadata], Coroutine[Any, Any, str]]


class Settlement:
    """What Stripe reports, applied to the purchases of `purchases` (their streams, desks and
    payment recorder)."""

    def __init__(self, purchases: Purchases) -> None:
        self._purchases = purchases

    async def settle(self, event: WebhookEvent, meta: Metadata, apply: Settle | None = None) -> str:
        """Apply one Stripe event once; returns what was done (for the log): `duplicate` for
        an event already applied. What a Stripe event changes is appended with the event's id
        as causation id (`meta`), so the purchase's own stream says whether it was applied,
        in the read that loads it, and in the purchase's chain (the correlation id of its
        opening); an event that changes nothing may come again and again changes nothing.
        `apply` decides and stores what the event changes (default: what a payment report
        changes; refunds and disputes bring their own)."""
        if event.purchase_token is None:
            return "ignored"
        with self._purchases.polls.settling(event.purchase_token):
            return await self._settle(event, meta, apply)

    async def _settle(self, event: WebhookEvent, meta: Metadata, apply: Settle | None) -> str:
        assert event.purchase_token is not None
        stream = streams.purchase(event.purchase_token)
        opening = self._opening(event, apply)
        for _ in range(MAX_SETTLE_ATTEMPTS):
            if opening is not None:
                state, version = opening.state, opening.version
                chained = meta.joining(opening.metadata)
                opening = None
            else:
                recorded = await self._purchases.reads.get(stream)
                if any(r.metadata.causation_id == event.id for r in recorded):
                    return "duplicate"
                state, version = purchase_from(recorded)
                if state is None:
                    return "unknown_purchase"
                chained = meta.in_chain_of(recorded[0])
            paying = event.amount if event.report == "succeeded" else None
            if not purchasing.its_payment(state, event.intent_id, paying, event.currency):
                log.warning(
                    "stripe_report_of_another_intent", event_id=event.id, token=state.opened.token
                )
                return "ignored"
            try:
                return await (apply or self._paid_or_failed)(state, version, event, chained)
            except (ConcurrencyError, purchase_settling.SettledMeanwhile):
                continue
        raise ConcurrencyError(stream, "settle")

    def _opening(self, event: WebhookEvent, apply: Settle | None) -> Opening | None:
        """The purchase as this process stored it when it took its payment, for a report of
        that payment: on a purchase still waiting for it, `_paid_or_failed` appends whichever
        it reports, at the version it was stored at, so a purchase changed since (this very
        report applied already included) is refused by the store and decided again as read.
        Any other report may change nothing, which no version would check."""
        if apply is not None or event.report not in ("succeeded", "failed"):
            return None
        assert event.purchase_token is not None
        return self._purchases.intents.opening(event.purchase_token)

    async def _paid_or_failed(
        self, state: PurchaseState, version: int, event: WebhookEvent, meta: Metadata
    ) -> str:
        token = state.opened.token
        stream = streams.purchase(token)
        if event.report == "succeeded":
            if state.status == "paid":
                return "already_paid"
            if state.status == "pending_payment":
                schedule = await self._purchases.catalog.schedule(state.opened)
                paid = purchase_settling.paid_with_tickets(
                    state, event.intent_id, datetime.now(UTC), schedule
                )
                appends = [
                    PendingAppend(s, version if s == stream else NO_STREAM, events)
                    for s, events in paid.items()
                ]
                await self._purchases.recorder.append(appends, meta)
                return "paid"
            return await self._late_payment(state, version, event.intent_id, meta)
        if event.report == "failed" and state.status == "pending_payment":
            failed = purchasing.PaymentFailed(
                token=token, intent_id=event.intent_id, reason=f"payment {event.status}"
            )
            await self._purchases.recorder.append([PendingAppend(stream, version, [failed])], meta)
            return "payment_failed"
        return "ignored"

    async def _late_payment(
        self, state: PurchaseState, version: int, intent_id: str, meta: Metadata
    ) -> str:
        """Money arrived for a purchase that had already let go of its seats: sell the same
        seats (and discount use) if they are still free, otherwise decide to give the money
        back. Either is one
        append at the purchase's version, so of concurrent deliveries of the payment one
        decides and the others find it decided (`duplicate`); the refund itself is made by the
        payments worker once its decision is stored."""
        opened = state.opened
        if state.refunded:
            return "refund_already_decided"
        command = sale_commands.HoldAgain(
            state=state,
            purchase_version=version,
            intent_id=intent_id,
            now=datetime.now(UTC),
            schedule=await self._purchases.catalog.schedule(opened),
            sections=[]
            if opened.event_id is None
            else await self._purchases.catalog.sections_of_event(opened.event_id),
        )
        try:
            desk = inventory_desk(self._purchases.desks, opened)
            await desk.submit(command, meta, sales.discount_streams(command))
            return "paid_late"
        except (
            holds.SeatsTaken,
            holds.InsufficientAvailability,
            attraction_days.DailyCapacityExceeded,
            discounts.MaxUsesReached,
        ) as exc:
            reason = exc.code
        refund = purchasing.decide_late_refund(state, intent_id, reason)
        if not refund:
            return "ignored"
        await self._purchases.recorder.append(
            [PendingAppend(streams.purchase(opened.token), version, refund)], meta
        )
        return "refund_decided"
