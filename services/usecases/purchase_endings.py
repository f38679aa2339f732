"""Ending an unpaid purchase: cancelled by its partner, expired by the sweeper once its hold's
time is up, or released when its payment cannot be started (services/usecases/purchases.py).
The purchase's end and the holds and discount use it gives back are decided together at the
inventory's desk and stored in one append, so no seat is ever held by a purchase that ended."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from domain import purchasing, sale_commands, sales, streams
from domain.errors import NotFound
from domain.events import Event
from domain.purchasing import PurchaseState
from infra.eventstore import ConcurrencyError, Metadata, read_stream
from projections import purchases as purchases_read_model
from services.usecases.sales_desks import Desks, inventory_desk
from services.usecases.ticketing import purchase_from

# An unpaid purchase's end decided again when another change got there first (a payment, a
# second cancel): each attempt sees that change, so few are ever needed.
RELEASE_ATTEMPTS = 5


class Endings:
    def __init__(
        self,
        pool: asyncpg.Pool,
        desks: Desks,
        find: Callable[[str, int], Awaitable[tuple[PurchaseState, int]]],
    ) -> None:
        """`find`: the purchases' own lookup, so that a partner cancels only a purchase it could
        read (another organization's is not found)."""
        self._pool = pool
        self._desks = desks
        self._find = find

    async def cancel(self, token: str, organization_id: int, meta: Metadata) -> None:
        """Its PaymentIntent is cancelled at Stripe by the payments worker once the cancellation
        is stored (services/workers/payment_effects.py), not on the partner's request."""
        await self._find(token, organization_id)
        await self.release(
            token, "cancelled", meta, decide=lambda s: purchasing.cancel(s, "cancelled")
        )

    async def expire(self, token: str, meta: Metadata) -> bool:
        """`meta` names who expires it (the sweeper): a timer, so the expiry is recorded as
        caused by the purchase's opening, whose deadline passed, in its chain."""
        now = datetime.now(UTC)
        return await self.release(
            token, "expired", meta, decide=lambda s: purchasing.expire(s, now), timed_out=True
        )

    async def release(
        self,
        token: str,
        reason: str,
        meta: Metadata,
        *,
        decide: Callable[[PurchaseState], list[Event]] | None = None,
        timed_out: bool = False,
    ) -> bool:
        """End an unpaid purchase and give back its holds and discount use, in one append at
        the inventory's desk. `decide` says what ends the purchase (default: cancelled for
        the reason); returns False when there was nothing to end. `timed_out`: caused by the
        purchase's opening rather than by whoever `meta` names. A purchase changed meanwhile
        (paid, cancelled by another call, expired) is decided again as it is now: a second
        cancel is told the purchase is gone, not that the service is busy."""
        stream = streams.purchase(token)
        end = decide or (lambda s: [purchasing.PurchaseCancelled(token=token, reason=reason)])
        for _ in range(RELEASE_ATTEMPTS):
            recorded = await read_stream(self._pool, stream)
            state, version = purchase_from(recorded)
            if state is None:
                raise NotFound("purchase not found", "token")
            ending = end(state)
            if not ending:
                return False
            command = sale_commands.ReleaseHolds(
                opened=state.opened, reason=reason, ending=ending, purchase_version=version
            )
            try:
                await inventory_desk(self._desks, state.opened).submit(
                    command,
                    meta.caused_by(recorded[0]) if timed_out else meta,
                    sales.discount_streams(command),
                )
            except ConcurrencyError as exc:
                if exc.stream_id != stream:
                    raise
                continue
            return True
        raise ConcurrencyError(stream, "the purchase kept changing")

    async def due_for_expiry(self, now: datetime, limit: int = 500) -> list[str]:
        return await purchases_read_model.due_for_expiry(self._pool, now, limit)
