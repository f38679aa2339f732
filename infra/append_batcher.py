"""Group commit for appends that decide nothing together. In an on-sale a hundred purchases
come back from Stripe in the same few milliseconds, each with one event for its own stream;
a round trip and a pool connection each would queue them behind every read in the process.
The batcher stores whatever is waiting in one transaction, so they wait for one commit instead.

Each caller's append keeps its own optimistic check, exact as if alone: when one of its streams'
versions has moved, that caller gets the ConcurrencyError and the others are stored by the same
statement (`append_each`: one round trip however many conflict). A caller whose append the
database refuses (say, a string PostgreSQL cannot store) must not fail the others either: the
batch is split in halves and each stored on its own, until the refused caller is alone with its
error. A failure that leaves unknown whether
the batch was stored (the connection lost mid-commit) goes to every caller of the batch, as
storing it again could store it twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from domain.streams import category as stream_category
from infra.eventstore import (
    ANY_VERSION,
    ConcurrencyError,
    Metadata,
    PendingAppend,
    event_columns,
)
from infra.metrics import APPEND_CONFLICTS, observe_append
from infra.supervise import detached, stop_task

MAX_BATCH = 200
IN_FLIGHT = 4


async def append_each(
    conn: asyncpg.Connection | asyncpg.Pool,
    groups: Sequence[Sequence[PendingAppend]],
    metadata: Metadata,
) -> list[dict[str, int] | ConcurrencyError]:
    """Several callers' appends in one statement and one commit (group commit): each group is
    stored whole, with the versions `eventstore.append` would return, or refused with the
    ConcurrencyError it would have got alone, while the other groups are stored. A stream may
    appear once in all. Outside any transaction of the caller's, like append_events (migration
    0016)."""
    flat = [pending for group in groups for pending in group]
    streams = [a.stream_id for a in flat]
    if len(set(streams)) != len(streams):
        raise ValueError("each stream may appear once per append")
    columns = event_columns(flat, metadata)
    stream_of = [k for k, a in enumerate(flat, 1) for _ in a.events]
    offsets = [n for a in flat for n in range(1, len(a.events) + 1)]
    started = time.perf_counter()
    before = await conn.fetchval(
        "SELECT append_groups($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        streams,
        [a.expected_version for a in flat],
        [g for g, group in enumerate(groups) for _ in group],
        stream_of,
        offsets,
        columns.event_ids,
        columns.types,
        columns.data,
        columns.metadata,
        columns.schema_versions,
    )
    seconds = time.perf_counter() - started
    found = dict(zip(streams, before, strict=True))
    results: list[dict[str, int] | ConcurrencyError] = []
    for group in groups:
        kind = stream_category(group[0].stream_id) if group else "none"
        observe_append(kind, seconds)
        late = next(
            (a for a in group if a.expected_version not in (ANY_VERSION, found[a.stream_id])),
            None,
        )
        if late is None:
            results.append({a.stream_id: found[a.stream_id] + len(a.events) for a in group})
            continue
        APPEND_CONFLICTS.labels(kind).inc()
        detail = f"expected version {late.expected_version}, stream is at {found[late.stream_id]}"
        results.append(ConcurrencyError(late.stream_id, detail))
    return results


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
    """Up to `in_flight` batches are stored at once, each on a connection of its own: one commit
    at a time would leave the rest of the pool idle while it waits for the disk (and, on a
    shared machine, give the appends one backend's share of the CPU)."""

    def __init__(
        self, pool: asyncpg.Pool, max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._waiting: list[_Job] = []
        self._storing: set[str] = set()  # the streams of the batches being stored
        self._workers: set[asyncio.Task[None]] = set()

    async def append(self, appends: Sequence[PendingAppend], metadata: Metadata) -> dict[str, int]:
        """Store `appends` atomically (with other callers' in the same transaction); returns
        each stream's new version, as `infra.eventstore.append` does."""
        if not appends:
            return {}
        future: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Job(appends, metadata, future))
        # A worker that found nothing to take is done at once, before its done callback runs.
        if sum(not worker.done() for worker in self._workers) < self._in_flight:
            worker = detached(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return await future

    async def close(self) -> None:
        for worker in list(self._workers):
            await stop_task(worker)
        for job in self._waiting:
            job.future.cancel()
        self._waiting.clear()

    async def _work(self) -> None:
        while batch := self._take():
            streams = set().union(*(job.streams for job in batch))
            self._storing |= streams
            try:
                await self._store(batch)
            except BaseException as exc:
                fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._storing -= streams

    def _take(self) -> list[_Job]:
        """The oldest waiting jobs, at most one per stream (an append names a stream once) and
        none for a stream of a batch being stored: a later append to a stream waits for a later
        batch, after the earlier one is stored. Empty when every waiting job must wait so: the
        worker storing its stream takes it next."""
        batch: list[_Job] = []
        seen = set(self._storing)
        later: list[_Job] = []
        for job in self._waiting:
            if len(batch) < self._max_batch and not job.streams & seen:
                batch.append(job)
            else:
                later.append(job)
            seen |= job.streams
        self._waiting = later
        return batch

    async def _store(self, batch: list[_Job]) -> None:
        groups = [
            [
                PendingAppend(
                    a.stream_id,
                    a.expected_version,
                    a.events,
                    metadata=a.metadata or [job.metadata] * len(a.events),
                )
                for a in job.appends
            ]
            for job in batch
        ]
        try:
            results = await append_each(self._pool, groups, batch[0].metadata)
        except Exception as exc:
            if len(batch) == 1 or not stored_nothing(exc):
                raise
            await self._isolate(batch)
            return
        for job, result in zip(batch, results, strict=True):
            if job.future.done():  # a caller that stopped waiting is stored all the same
                continue
            if isinstance(result, ConcurrencyError):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    async def _isolate(self, batch: list[_Job]) -> None:
        """Store each half on its own, so the caller whose append the database refused ends
        alone with the error (log2 of the batch's size more appends for it)."""
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            try:
                await self._store(part)
            except Exception as exc:
                fail(part, exc)
