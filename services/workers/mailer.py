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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import asyncpg
import structlog

from infra.mail import MailTransport
from infra.mail_outbox import CHANNEL
from services.workers.outbox import OutboxTable, OutboxWorker

log = structlog.get_logger(__name__)

Compose = Callable[[str, str], Awaitable[EmailMessage | None]]
MAIL_OUTBOX = OutboxTable("mail_outbox", CHANNEL, "sent_at", "purchase_token, kind")
_SENT = "UPDATE mail_outbox SET sent_at = now() WHERE id = $1"


class Mailer(OutboxWorker):
    """Sends due rows through `transport`; `compose(purchase_token, kind)` builds the message,
    or returns None when there is nothing to send any more (the row is then given up)."""

    name = "mail"

    def __init__(
        self, pool: asyncpg.Pool, transport: MailTransport, compose: Compose, **options: Any
    ) -> None:
        super().__init__(pool, MAIL_OUTBOX, **options)
        self._transport = transport
        self._compose = compose

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
