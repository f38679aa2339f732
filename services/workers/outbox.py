"""What the mailer and the payments worker share: an outbox table whose rows are effects to
carry out outside the database, each queued in the same transaction as what decided it.

A row is claimed (leased) in one short transaction with `FOR UPDATE SKIP LOCKED`, so several
workers may run at once and none claims a row another holds within its lease; the effect is
carried out outside any transaction, and its outcome recorded afterwards. A failure is tried
again by a backoff table, up to a number of attempts. The claim's attempt count guards each
row: a worker whose lease ran out, and whose row was claimed again, never overwrites the newer
attempt's schedule. The lease is short and renewed while the effect is carried out, so a slow
SMTP server or Stripe keeps its row, and the row of a worker killed mid-effect is due again
within a lease (half a minute), not minutes. A crash between the effect and its record repeats
the effect once the lease runs out: each worker makes that harmless its own way (Stripe's
idempotency keys; for mail, a second copy beats a lost confirmation)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from infra.db import connection_gone
from infra.metrics import OUTBOX_FAILURES
from infra.pgtext import make_storable
from infra.supervise import dependency_of, serve_forever, stop_task

log = structlog.get_logger(__name__)

ERROR_LIMIT = 1000
# Pauses between tries to record an outcome while PostgreSQL is out of reach: a restart of a
# second or two is waited out rather than leaving the row to its lease (half a minute), after
# which its effect would be carried out again (an e-mail sent twice).
RECORD_PAUSES = (0.25, 0.5, 1.0, 2.0, 4.0)
# How long a claimed row is a worker's without a renewal; renewed three times a lease.
LEASE_SECONDS = 30.0
# How long a stopping worker waits for the effects under way to finish and be recorded: less
# than the 5 s after which a task still running is cancelled again (infra/supervise.py).
FINISH_SECONDS = 4.0


@dataclass(frozen=True)
class OutboxTable:
    """An outbox's table: its name, the channel its enqueues notify, the column set when a
    row is done, and the columns a claimed row carries to the worker."""

    name: str
    channel: str
    done_column: str
    columns: str

    @property
    def claim(self) -> str:
        return (
            f"UPDATE {self.name} SET attempts = attempts + 1,"
            " next_attempt_at = now() + make_interval(secs => $2::float8)"
            f" WHERE id IN (SELECT id FROM {self.name} WHERE {self.done_column} IS NULL"
            " AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1"
            f" FOR UPDATE SKIP LOCKED) RETURNING id, attempts, {self.columns}"
        )

    @property
    def renew(self) -> str:
        """Extends the leases of rows still being carried out (their attempt unchanged)."""
        return (
            f"UPDATE {self.name} AS t SET next_attempt_at = now()"
            " + make_interval(secs => $3::float8)"
            " FROM unnest($1::bigint[], $2::int[]) AS held(id, attempts)"
            " WHERE t.id = held.id AND t.attempts = held.attempts"
            f" AND t.{self.done_column} IS NULL AND t.next_attempt_at IS NOT NULL"
        )

    @property
    def pending(self) -> str:
        """Rows neither done nor given up, counted up to $1 (for /metrics)."""
        return (
            f"SELECT count(*) FROM (SELECT 1 FROM {self.name} WHERE {self.done_column} IS NULL"
            " AND next_attempt_at IS NOT NULL LIMIT $1) pending"
        )

    @property
    def failed(self) -> str:
        return (
            f"UPDATE {self.name} SET last_error = $3,"
            " next_attempt_at = now() + make_interval(secs => $4::float8)"
            f" WHERE id = $1 AND attempts = $2 AND {self.done_column} IS NULL"
        )

    @property
    def given_up(self) -> str:
        return (
            f"UPDATE {self.name} SET last_error = $3, next_attempt_at = NULL"
            f" WHERE id = $1 AND attempts = $2 AND {self.done_column} IS NULL"
        )


class OutboxWorker(abc.ABC):
    """Claims due rows of `table` and carries each out (`carry_out`), at once when notified,
    else every `poll_interval` (retries falling due, a missed notification)."""

    name: str  # for the log: <name>_failed, <name>_abandoned, <name>_outcome_not_recorded

    def __init__(
        self,
        pool: asyncpg.Pool,
        table: OutboxTable,
        *,
        poll_interval: float = 1.0,
        backoff: Sequence[float] = (5, 30, 120, 600, 1800),
        max_attempts: int = 20,
        batch_size: int = 10,
        lease: float = LEASE_SECONDS,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        self._pool = pool
        self._table = table
        self._poll = poll_interval
        self._backoff = tuple(backoff)
        self._max_attempts = max_attempts
        self._batch_size = batch_size
        self._lease = lease
        self._wake = asyncio.Event()
        # Notifications heard on the table's channel: every enqueue sends one.
        self.notices = 0

    @abc.abstractmethod
    async def carry_out(self, row: asyncpg.Record) -> None:
        """Carry out one claimed row and record its outcome (`failed` to try it again)."""

    async def before_work(self) -> None:
        """Called before each pass of the running worker: one that should hold back a while
        waits here (the default: none)."""
        return

    async def run(self) -> None:
        """Work until cancelled; database outages are waited out, never fatal."""
        pause = self._poll
        await serve_forever(self._serve, self.name, first_pause=pause, longest_pause=pause)

    async def work_due(self) -> int:
        """One pass: claim the rows due now and carry them out concurrently; returns how many."""
        claimed = await self._pool.fetch(self._table.claim, self._batch_size, self._lease)
        if not claimed:
            return 0
        in_flight = {row["id"]: row["attempts"] for row in claimed}
        renewing = asyncio.create_task(self._renew_leases(in_flight))
        try:
            await asyncio.gather(*(self._carried_out(row, in_flight) for row in claimed))
        finally:
            await stop_task(renewing)
        return len(claimed)

    async def _carried_out(self, row: asyncpg.Record, in_flight: dict[int, int]) -> None:
        """`carry_out`, which a stopping worker lets finish (FINISH_SECONDS at most): an e-mail
        handed to the server or a Stripe call made goes on without the worker, and cut off
        before its outcome is recorded, it is carried out again by the next worker."""
        effect = asyncio.ensure_future(self.carry_out(row))
        try:
            await asyncio.shield(effect)
        except asyncio.CancelledError:
            await asyncio.wait({effect}, timeout=FINISH_SECONDS)
            effect.cancel()
            raise
        finally:
            in_flight.pop(row["id"], None)

    async def _renew_leases(self, in_flight: dict[int, int]) -> None:
        """Keeps the rows being carried out this worker's while it lives: one renewal missed
        (PostgreSQL out of reach a moment) leaves two more before the lease runs out."""
        while True:
            await asyncio.sleep(self._lease / 3)
            if not in_flight:
                continue
            try:
                await self._pool.execute(
                    self._table.renew, list(in_flight), list(in_flight.values()), self._lease
                )
            except Exception as exc:
                log.debug(f"{self.name}_lease_not_renewed", error=repr(exc))

    async def failed(self, row: asyncpg.Record, exc: Exception, fields: dict[str, Any]) -> None:
        """Schedule the next attempt by the backoff table, or give up after max_attempts. The
        stored text is made storable: a NUL in it (say, from a buyer's name) must not keep the
        row from being rescheduled."""
        error = make_storable(f"{type(exc).__name__}: {exc}")[:ERROR_LIMIT]
        attempts = row["attempts"]
        abandoned = attempts >= self._max_attempts
        OUTBOX_FAILURES.labels(self._table.name, "abandoned" if abandoned else "retry").inc()
        try:
            if abandoned:
                await self.record(self._table.given_up, row["id"], attempts, error)
                log.error(f"{self.name}_abandoned", error=error, **fields)
                return
            delay = self._backoff[min(attempts, len(self._backoff)) - 1]
            await self.record(self._table.failed, row["id"], attempts, error, float(delay))
        except Exception as record_exc:
            self.not_recorded(record_exc, fields)
            return
        log.warning(f"{self.name}_failed", error=error, retry_in=delay, **fields)

    async def give_up(self, row: asyncpg.Record, reason: str) -> None:
        await self.record(self._table.given_up, row["id"], row["attempts"], reason)

    async def record(self, query: str, *args: Any) -> None:
        """A row's outcome, tried again across a short PostgreSQL outage (RECORD_PAUSES)."""
        for pause in (*RECORD_PAUSES, None):
            try:
                await self._pool.execute(query, *args)
                return
            except Exception as exc:
                if pause is None or dependency_of(exc) != "postgresql":
                    raise
            await asyncio.sleep(pause)

    def not_recorded(self, exc: Exception, fields: dict[str, Any]) -> None:
        """The lease runs out and the row is tried again."""
        log.warning(f"{self.name}_outcome_not_recorded", error=repr(exc), **fields)

    async def _serve(self) -> None:
        async with self._pool.acquire() as listener:
            await listener.add_listener(self._table.channel, self._on_notify)
            try:
                while not connection_gone(listener):
                    self._wake.clear()
                    await self.before_work()
                    while await self.work_due() == self._batch_size:
                        await self.before_work()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that comes as it ends, and the worker would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await self._wake.wait()
                raise ConnectionError(f"{self.name} lost its LISTEN connection")
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(self._table.channel, self._on_notify)

    def _on_notify(self, *_: Any) -> None:
        self.notices += 1
        self._wake.set()
