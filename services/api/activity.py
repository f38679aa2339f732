"""The partner API activity log: every call (time, method, path, status, duration, key, request
id) is recorded for 7 days so an organization can diagnose its own integration.

Recording must not add latency to the request, so `ActivityLog.record` only appends to an
in-memory buffer and a background task (`ActivityLog.run`) writes the buffer in batches with
COPY. If the database is unavailable the entries are kept and retried; the buffer is bounded,
dropping the oldest entries first, so an outage can never exhaust the gateway's memory. A batch
the database refuses is written again in halves, and an entry it refuses on its own is dropped
with a log line, so one bad row can never hold back every later flush."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import structlog

from infra.append_batcher import stored_nothing
from infra.pgtext import make_storable

log = structlog.get_logger(__name__)

RETENTION = timedelta(days=7)
PURGE_INTERVAL = 600.0
_PURGE_CHUNK = 10_000
_COLUMNS = (
    "recorded_at",
    "organization_id",
    "api_key_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "request_id",
    "remote",
)


class ActivityEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One partner API call. organization_id and api_key_id are None when authentication
    failed, so failed calls are still recorded (and only visible to operators)."""

    recorded_at: datetime
    organization_id: int | None
    api_key_id: int | None
    method: str
    path: str
    status: int
    duration_ms: float
    request_id: str
    remote: str | None = None


def _storable(value: object) -> object:
    """A request's path may carry what PostgreSQL cannot hold (`/events/a%00b`)."""
    return make_storable(value) if isinstance(value, str) else value


def _row(entry: ActivityEntry) -> tuple[object, ...]:
    return tuple(_storable(getattr(entry, column)) for column in _COLUMNS)


class ActivityLog:
    """A per-process buffer of activity entries and the task that writes them in batches."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        flush_interval: float = 0.5,
        batch_size: int = 500,
        retention: timedelta = RETENTION,
        max_pending: int = 50_000,
    ) -> None:
        if batch_size < 1 or max_pending < 1:
            raise ValueError("batch_size and max_pending must be positive")
        self._pool = pool
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._retention = retention
        self._max_pending = max_pending
        self._pending: deque[ActivityEntry] = deque()
        self._dropped = 0
        self._lock = asyncio.Lock()
        # A batch write is shielded from cancellation, so it may outlive the flush that started
        # it; the next flush waits for it instead of racing it.
        self._writing: asyncio.Future[BaseException | None] | None = None

    @property
    def pending(self) -> int:
        """Entries recorded but not yet written."""
        return len(self._pending)

    def record(self, entry: ActivityEntry) -> None:
        """Buffer one entry; never blocks or awaits, so it is safe on the request path."""
        self._pending.append(entry)
        self._bound()

    def _bound(self) -> None:
        while len(self._pending) > self._max_pending:
            self._pending.popleft()
            self._dropped += 1

    async def run(self) -> None:
        """Write the buffer every flush_interval and purge expired rows at start and about every
        10 minutes; database errors are logged and retried, so this only ends when cancelled.
        After cancelling it, call `close()` (or `flush()`) to write what is still buffered."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while True:
            if loop.time() >= next_purge:
                next_purge = loop.time() + PURGE_INTERVAL
                try:
                    await self.purge()
                except Exception as exc:
                    log.warning("activity_purge_failed", error=repr(exc))
            try:
                await self.flush()
            except Exception as exc:
                log.warning("activity_flush_failed", error=repr(exc), pending=self.pending)
            await asyncio.sleep(self._flush_interval)

    async def flush(self) -> int:
        """Write everything buffered now, in batches; returns how many entries were written.
        On a database error the unwritten entries stay buffered and the error is raised."""
        async with self._lock:
            written = 0
            try:
                if self._writing is not None:
                    await asyncio.shield(self._writing)
                    self._writing = None
                # Only what is buffered now, so a flush ends even while calls keep arriving.
                remaining = len(self._pending)
                while remaining > 0 and self._pending:
                    count = min(self._batch_size, remaining, len(self._pending))
                    remaining -= count
                    batch = [self._pending.popleft() for _ in range(count)]
                    self._writing = asyncio.ensure_future(self._write(batch))
                    error = await asyncio.shield(self._writing)
                    self._writing = None
                    if error is not None:
                        raise error
                    written += count
            finally:
                self._report_drops()
            return written

    async def _write(self, batch: list[ActivityEntry]) -> BaseException | None:
        """Write one batch with COPY. When the database cannot be reached, put what is not
        written back at the front of the buffer (oldest first, still bounded) and return the
        error rather than raise it."""
        error, unwritten = await self._store(batch)
        if error is not None:
            self._pending.extendleft(reversed(unwritten))
            self._bound()
        return error

    async def _store(
        self, batch: list[ActivityEntry]
    ) -> tuple[BaseException | None, list[ActivityEntry]]:
        """The error that stopped the writing, if any, and the entries not written then. A
        batch the database refuses is written again in halves; an entry it refuses on its own
        is dropped with a log line."""
        try:
            await self._copy(batch)
        except Exception as exc:
            if not stored_nothing(exc):
                return exc, batch
            if len(batch) == 1:
                log.warning(
                    "activity_entry_dropped", error=repr(exc), request_id=batch[0].request_id
                )
                return None, []
            half = len(batch) // 2
            error, unwritten = await self._store(batch[:half])
            if error is not None:
                return error, unwritten + batch[half:]
            return await self._store(batch[half:])
        return None, []

    async def _copy(self, batch: list[ActivityEntry]) -> None:
        await self._pool.copy_records_to_table(
            "api_activity", records=[_row(e) for e in batch], columns=list(_COLUMNS)
        )

    def _report_drops(self) -> None:
        if self._dropped:
            log.warning(
                "activity_entries_dropped", dropped=self._dropped, max_pending=self._max_pending
            )
            self._dropped = 0

    async def purge(self) -> int:
        """Delete rows older than the retention, in chunks so no statement holds locks long;
        returns how many were deleted."""
        deleted = 0
        while True:
            status = await self._pool.execute(
                "DELETE FROM api_activity WHERE id IN ("
                " SELECT id FROM api_activity WHERE recorded_at < now() - $1::interval"
                " LIMIT $2)",
                self._retention,
                _PURGE_CHUNK,
            )
            count = int(status.rsplit(" ", 1)[-1])
            deleted += count
            if count < _PURGE_CHUNK:
                if deleted:
                    log.info("activity_purged", deleted=deleted)
                return deleted

    async def close(self) -> None:
        """Final flush at shutdown: whatever cannot be written is logged, never raised."""
        try:
            await self.flush()
        except Exception as exc:
            log.warning("activity_lost_at_shutdown", error=repr(exc), lost=self.pending)


async def recent_activity(
    pool: asyncpg.Pool | asyncpg.Connection,
    organization_id: int,
    *,
    api_key_id: int | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[ActivityEntry]:
    """An organization's calls, newest first, never older than the retention (rows the purge has
    not reached yet are hidden too). A naive `since` is taken as UTC."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = await pool.fetch(
        f"SELECT {', '.join(_COLUMNS)} FROM api_activity"
        " WHERE organization_id = $1"
        " AND recorded_at >= now() - $2::interval"
        " AND ($3::bigint IS NULL OR api_key_id = $3)"
        " AND ($4::timestamptz IS NULL OR recorded_at >= $4)"
        " ORDER BY recorded_at DESC, id DESC"
        " LIMIT $5",
        organization_id,
        RETENTION,
        api_key_id,
        since,
        limit,
    )
    return [ActivityEntry(**dict(row)) for row in rows]
