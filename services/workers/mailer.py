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

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from typing import Any, Literal

import asyncpg
import structlog

from infra.mail import MailTransport
from infra.outbox import CHANNEL
from infra.pgtext import make_storable
from infra.supervise import serve_forever

log = structlog.get_logger(__name__)

ERROR_LIMIT = 1000

Compose = Callable[[str, str], Awaitable[EmailMessage | None]]
Outcome = Literal["sent", "dropped"] | Exception

_CLAIM = """
UPDATE mail_outbox SET attempts = attempts + 1,
    next_attempt_at = now() + make_interval(secs => $2::float8)
WHERE id IN (
    SELECT id FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, purchase_token, kind, attempts
"""
_SENT = "UPDATE mail_outbox SET sent_at = now() WHERE id = $1"
# The claim's attempt count guards the row: a mailer whose lease ran out and whose row was
# claimed again must not overwrite the newer attempt's schedule.
_FAILED = """
UPDATE mail_outbox SET last_error = $3,
    next_attempt_at = now() + make_interval(secs => $4::float8)
WHERE id = $1 AND attempts = $2 AND sent_at IS NULL
"""
_GIVEN_UP = """
UPDATE mail_outbox SET last_error = $3, next_attempt_at = NULL
WHERE id = $1 AND attempts = $2 AND sent_at IS NULL
"""


class Mailer:
    """Sends due rows through `transport`; `compose(purchase_token, kind)` builds the message,
    or returns None when there is nothing to send any more (the row is then given up)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        transport: MailTransport,
        compose: Compose,
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
        self._transport = transport
        self._compose = compose
        self._poll = poll_interval
        self._backoff = tuple(backoff)
        self._max_attempts = max_attempts
        self._batch_size = batch_size
        self._lease = lease
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Send until cancelled; database outages are waited out, never fatal."""
        await serve_forever(self._serve, "mailer", first_pause=self._poll, longest_pause=self._poll)

    async def _serve(self) -> None:
        """LISTEN for enqueues so new mail goes out at once; the poll interval is the fallback
        for rows whose retry falls due and for a missed notification."""
        async with self._pool.acquire() as listener:
            await listener.add_listener(CHANNEL, self._on_notify)
            try:
                while not listener.is_closed():
                    self._wake.clear()
                    while await self.send_due() == self._batch_size:
                        pass
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that comes as it ends, and the mailer would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await self._wake.wait()
                raise ConnectionError("mailer lost its LISTEN connection")
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(CHANNEL, self._on_notify)

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def send_due(self) -> int:
        """One pass: claim the rows due now and send them concurrently; returns how many."""
        claimed = await self._pool.fetch(_CLAIM, self._batch_size, self._lease)
        await asyncio.gather(*(self._deliver(row) for row in claimed))
        return len(claimed)

    async def _deliver(self, row: asyncpg.Record) -> None:
        outcome = await self._attempt(row)
        try:
            await self._record(row, outcome)
        except Exception as exc:
            # The lease runs out and the row is tried again: at least once.
            log.warning("mail_outcome_not_recorded", outbox_id=row["id"], error=repr(exc))

    async def _attempt(self, row: asyncpg.Record) -> Outcome:
        try:
            message = await self._compose(row["purchase_token"], row["kind"])
            if message is None:
                return "dropped"
            await self._transport.send(message)
        except Exception as exc:
            return exc
        return "sent"

    async def _record(self, row: asyncpg.Record, outcome: Outcome) -> None:
        fields = {"outbox_id": row["id"], "kind": row["kind"], "attempt": row["attempts"]}
        if isinstance(outcome, Exception):
            await self._record_failure(row, outcome, fields)
        elif outcome == "sent":
            await self._pool.execute(_SENT, row["id"])
            log.info("mail_sent", **fields)
        else:
            await self._pool.execute(_GIVEN_UP, row["id"], row["attempts"], "dropped by compose")
            log.info("mail_dropped", **fields)

    async def _record_failure(
        self, row: asyncpg.Record, exc: Exception, fields: dict[str, Any]
    ) -> None:
        """Schedule the next attempt by the backoff table, or give up after max_attempts. The
        stored text is the transport's own (credentials already struck out), made storable: a
        NUL in it (say, from a buyer's name) must not keep the row from being rescheduled."""
        error = make_storable(f"{type(exc).__name__}: {exc}")[:ERROR_LIMIT]
        attempts = row["attempts"]
        if attempts >= self._max_attempts:
            await self._pool.execute(_GIVEN_UP, row["id"], attempts, error)
            log.error("mail_abandoned", error=error, **fields)
            return
        delay = self._backoff[min(attempts, len(self._backoff)) - 1]
        await self._pool.execute(_FAILED, row["id"], attempts, error, float(delay))
        log.warning("mail_failed", error=error, retry_in=delay, **fields)
