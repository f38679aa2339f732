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

from infra.mail import MailTransport, identify_as_sent_for
from infra.mail_outbox import CHANNEL
from infra.settings import Settings
from infra.supervise import stop_task
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
RUSH_LOOK = 0.25  # seconds between looks at the queue


@dataclass(frozen=True)
class _Look:
    """The queue as last looked at: when, how many e-mails were ever queued, and how long the
    longest-waiting due one had waited (seconds)."""

    at: float
    queued: int
    overdue: float


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
        self._look: _Look | None = None
        self._queued_per_second = 0.0

    async def run(self) -> None:
        """Works the outbox, with the queue watched alongside (`_watch_queue`)."""
        if self._longest_deferral <= 0:
            await super().run()
            return
        watching = asyncio.create_task(self._watch_queue())
        try:
            await super().run()
        finally:
            await stop_task(watching)

    async def _watch_queue(self) -> None:
        """Looks at the queue every `rush_look` seconds whatever the mailer is doing: during a
        sale a pass of confirmations (their PDFs rendered at low priority) takes seconds, and
        the rush must be seen before the next one starts. With no e-mail queued since the last
        look (every enqueue notifies), nothing is asked of the database."""
        heard = -1
        while True:
            if self._look is not None and self.notices == heard:
                self._queued_per_second = 0.0
            else:
                notices = self.notices  # those heard while the query runs are looked at next
                try:
                    queued, overdue = await self._pool.fetchrow(_QUEUE)
                except Exception as exc:  # the worker's own loop waits a database outage out
                    log.debug("mail_queue_unseen", error=repr(exc))
                else:
                    heard = notices
                    now = time.monotonic()
                    if self._look is not None:
                        rate = (queued - self._look.queued) / (now - self._look.at)
                        self._queued_per_second = rate
                    self._look = _Look(now, queued, overdue)
            await asyncio.sleep(self._rush_look)

    def _rushing(self) -> bool:
        """E-mails queue faster than a rush's rate, and none has waited the longest deferral
        (counting the time since the last look: should the looks fail, the rush ends then)."""
        look = self._look
        if look is None or self._queued_per_second <= self._rush_per_second:
            return False
        return look.overdue + time.monotonic() - look.at < self._longest_deferral

    async def before_work(self) -> None:
        """Waits while a rush lasts (see the module's docstring)."""
        if not self._rushing():
            return
        deferred_at = time.monotonic()
        log.info("mail_yields_to_rush", queued_per_second=round(self._queued_per_second, 1))
        while self._rushing():
            await asyncio.sleep(self._rush_look)
        log.info(
            "mail_resumes",
            waited_seconds=round(time.monotonic() - deferred_at, 2),
            queued_per_second=round(self._queued_per_second, 1),
        )

    async def carry_out(self, row: asyncpg.Record) -> None:
        fields = {"outbox_id": row["id"], "kind": row["kind"], "attempt": row["attempts"]}
        try:
            message = await self._compose(row["purchase_token"], row["kind"])
            if message is not None:
                identify_as_sent_for(message, row["id"], row["purchase_token"])
                await self._transport.send(message)
        except Exception as exc:
            await self.failed(row, exc, fields)
            return
        try:
            if message is None:
                await self.give_up(row, "dropped by compose")
                log.info("mail_dropped", **fields)
            else:
                await self.record(_SENT, row["id"])
                log.info("mail_sent", **fields)
        except Exception as exc:
            self.not_recorded(exc, fields)
