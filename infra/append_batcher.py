"""Group commit for appends that decide nothing together. In an on-sale a hundred purchases
come back from Stripe in the same few milliseconds, each with one event for its own stream;
a round trip and a pool connection each would queue them behind every read in the process.
The batcher stores whatever is waiting in one transaction, so they wait for one commit instead.

Each caller's append keeps its own optimistic check: when one stream's version has moved, the
transaction stores nothing, that caller gets the ConcurrencyError and the others are stored
again without it. A caller whose append the database refuses (say, a string PostgreSQL cannot
store) must not fail the others either: the batch is split in halves and each stored on its
own, until the refused caller is alone with its error. A failure that leaves unknown whether
the batch was stored (the connection lost mid-commit) goes to every caller of the batch, as
storing it again could store it twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from infra.eventstore import ConcurrencyError, Metadata, PendingAppend, append
from infra.supervise import stop_task

MAX_BATCH = 200


def stored_nothing(exc: BaseException) -> bool:
    """Whether a failed append certainly stored nothing, so its events may be appended again:
    the server refused the statement (a data error, a constraint), or the events could not
    even be encoded for it. Not when the connection broke or the server went down: the
    commit may have happened."""
    if isinstance(exc, asyncpg.PostgresError):
        return not isinstance(
            exc, (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)
        )
    return isinstance(exc, (ValueError, TypeError, OverflowError, msgspec.EncodeError))


def fail(jobs: Sequence[Any], exc: BaseException) -> None:
    """Give `exc` to every job (with a `future`) still waiting for its answer."""
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)


@dataclass
class _Job:
    appends: Sequence[PendingAppend]
    metadata: Metadata
    future: asyncio.Future[dict[str, int]]

    @property
    def streams(self) -> set[str]:
        return {a.stream_id for a in self.appends}


class AppendBatcher:
    def __init__(self, pool: asyncpg.Pool, max_batch: int = MAX_BATCH) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._waiting: list[_Job] = []
        self._worker: asyncio.Task[None] | None = None

    async def append(self, appends: Sequence[PendingAppend], metadata: Metadata) -> dict[str, int]:
        """Store `appends` atomically (with other callers' in the same transaction); returns
        each stream's new version, as `infra.eventstore.append` does."""
        if not appends:
            return {}
        future: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Job(appends, metadata, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def close(self) -> None:
        await stop_task(self._worker)
        for job in self._waiting:
            job.future.cancel()
        self._waiting.clear()

    async def _work(self) -> None:
        while self._waiting:
            batch = self._take()
            try:
                await self._store(batch)
            except BaseException as exc:
                fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise

    def _take(self) -> list[_Job]:
        """The oldest waiting jobs, at most one per stream (an append names a stream once); a
        second append to a stream waits for the next batch, after the first is stored."""
        batch: list[_Job] = []
        streams: set[str] = set()
        later: list[_Job] = []
        for job in self._waiting:
            if len(batch) < self._max_batch and not job.streams & streams:
                batch.append(job)
                streams |= job.streams
            else:
                later.append(job)
        self._waiting = later
        return batch

    async def _store(self, batch: list[_Job]) -> None:
        while batch:
            appends = [
                PendingAppend(
                    a.stream_id,
                    a.expected_version,
                    a.events,
                    metadata=a.metadata or [job.metadata] * len(a.events),
                )
                for job in batch
                for a in job.appends
            ]
            try:
                versions = await append(self._pool, appends, batch[0].metadata)
            except ConcurrencyError as exc:
                late = next((job for job in batch if exc.stream_id in job.streams), None)
                if late is None:
                    raise
                if not late.future.done():
                    late.future.set_exception(exc)
                batch = [job for job in batch if job is not late]
                continue
            except Exception as exc:
                if len(batch) == 1 or not stored_nothing(exc):
                    raise
                await self._isolate(batch)
                return
            for job in batch:
                if not job.future.done():  # a caller that stopped waiting is stored all the same
                    job.future.set_result({s: versions[s] for s in job.streams})
            return

    async def _isolate(self, batch: list[_Job]) -> None:
        """Store each half on its own, so the caller whose append the database refused ends
        alone with the error (log2 of the batch's size more appends for it)."""
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            try:
                await self._store(part)
            except Exception as exc:
                fail(part, exc)
