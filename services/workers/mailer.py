"""The mailer: sends the e-mail queued in `mail_outbox`, retrying with backoff until the server
accepts it.

At least once, not exactly once: a row is claimed (leased) in one short transaction, the
message is composed and sent outside it, and the row is marked sent afterwards. A crash, or a
lost database connection, between the SMTP server's acceptance and that mark sends the message
again once the lease runs out; so does a send that outlasts its lease. SMTP offers nothing
stronger, and a second copy beats a lost confirmation. Several mailers may run at once: claims
use `FOR UPDATE SKIP LOCKED`, so no row is claimed by two of them within one lease.

Duplicates are folded when queued: the confirmation of a purchase is queued once ever, a resend
once per minute (the `dedupe_key` column).

Mail yields to a rush: while e-mails are queued faster than `rush_per_second` (an on-sale: a
confirmation per paid purchase), the mailer waits, until the rush passes or the longest-waiting
due e-mail has waited `longest_deferral` seconds. Composing a confirmation and rendering its
tickets' PDF costs about as much CPU as selling them, and lower scheduling priority alone does
not keep the sale from queueing behind it (measured in the README's performance findings).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import asyncpg
import structlog

from infra.mail import MailTransport
from infra.mail_outbox import CHANNEL
from infra.settings import Settings
from services.workers.outbox import OutboxTable, OutboxWorker

log = structlog.get_logger(__name__)

Compose = Callable[[str, str], Awaitable[EmailMessage | None]]
MAIL_OUTBOX = OutboxTable("mail_outbox", CHANNEL, "sent_at", "purchase_token, kind")
_SENT = "UPDATE mail_outbox SET sent_at = now() WHERE id = $1"
# How many e-mails were ever queued (ids only grow), and how long the most overdue one has waited.
_QUEUE = (
    "SELECT coalesce((SELECT max(id) FROM mail_outbox), 0),"
    " coalesce(extract(epoch FROM now() - (SELECT min(next_attempt_at) FROM mail_outbox"
    " WHERE sent_at IS NULL AND next_attempt_at IS NOT NULL))::float8, 0)"
)
RUSH_LOOK = 0.25  # seconds between looks at the queue while a rush lasts


@dataclass
class Arrivals:
    """How fast a count grows, from samples at least `window` seconds apart: the rate holds
    between them, so looking more often costs nothing and changes nothing."""

    window: float
    rate: float = 0.0
    _at: float | None = None
    _count: int = 0

    def observe(self, now: float, count: int) -> float:
        if self._at is None:
            self._at, self._count = now, count
        elif now - self._at >= self.window:
            self.rate = (count - self._count) / (now - self._at)
            self._at, self._count = now, count
        return self.rate


class Mailer(OutboxWorker):
    """Sends due rows through `transport`; `compose(purchase_token, kind)` builds the message,
    or returns None when there is nothing to send any more (the row is then given up)."""

    name = "mail"

    def __init__(
        self,
        pool: asyncpg.Pool,
        transport: MailTransport,
        compose: Compose,
        *,
        rush_per_second: float = Settings.mail_rush_per_second,
        longest_deferral: float = Settings.mail_longest_deferral,
        rush_look: float = RUSH_LOOK,
        **options: Any,
    ) -> None:
        super().__init__(pool, MAIL_OUTBOX, **options)
        self._transport = transport
        self._compose = compose
        self._rush_per_second = rush_per_second
        self._longest_deferral = longest_deferral
        self._rush_look = rush_look
        self._arrivals = Arrivals(rush_look)

    async def before_work(self) -> None:
        """Waits while a rush lasts (see the module's docstring)."""
        if self._longest_deferral <= 0:
            return
        deferred_at = None
        while True:
            queued, overdue = await self._pool.fetchrow(_QUEUE)
            rate = self._arrivals.observe(time.monotonic(), queued)
            if rate <= self._rush_per_second or overdue >= self._longest_deferral:
                break
            if deferred_at is None:
                deferred_at = time.monotonic()
                log.info("mail_yields_to_rush", queued_per_second=round(rate, 1))
            await asyncio.sleep(self._rush_look)
        if deferred_at is not None:
            log.info("mail_resumes", waited_seconds=round(time.monotonic() - deferred_at, 2))

    async def carry_out(self, row: asyncpg.Record) -> None:
        fields = {"outbox_id": row["id"], "kind": row["kind"], "attempt": row["attempts"]}
        try:
            message = await self._compose(row["purchase_token"], row["kind"])
            if message is not None:
                await self._transport.send(message)
        except Exception as exc:
            await self.failed(row, exc, fields)
            return
        try:
            if message is None:
                await self.give_up(row, "dropped by compose")
                log.info("mail_dropped", **fields)
            else:
                await self._pool.execute(_SENT, row["id"])
                log.info("mail_sent", **fields)
        except Exception as exc:
            self.not_recorded(exc, fields)
