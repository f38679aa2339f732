"""A sales desk per hot aggregate: in an on-sale every buyer's command targets the same event
stream, and plain optimistic concurrency would turn that into a retry storm. Inside a process,
commands for one stream queue at its desk; one task has each decided in turn (by its kind's
`decide`, a pure function of the domain) against the cached, caught-up state, and appends
everything they decided in a single append. A command may also decide on companion streams
(a discount code's, beside an event's seats): the desk keeps those too, by stream id.
Conflicts with other processes still surface as ConcurrencyError: the desk reads what the
other process stored and decides the batch again; after two in a row it takes its turn,
holding its streams' append locks while it reads, decides and appends. A batch is decided on a
copy of the state, so the cached state only ever holds stored events and a conflict costs the
new events, not a reload of the stream.
A command whose events the database refuses fails alone: the batch is decided and appended
again in halves until that command is on its own (`_isolate`).
A desk that starts cold begins from the stream's latest snapshot, and stores new ones as it goes
(services/usecases/desk_snapshots.py)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from domain.events import Event
from domain.sale_commands import Decision
from domain.streams import category
from infra import snapshots
from infra.append_batcher import fail, stored_nothing
from infra.eventstore import (
    ConcurrencyError,
    Metadata,
    PendingAppend,
    append,
    read_stream,
    streams_held,
)
from infra.metrics import DESK_BATCH_SIZE, DESK_QUEUE_DEPTH
from infra.supervise import detached, stop_task
from services.usecases.desk_kinds import Aggregate, Cached, Kind
from services.usecases.desk_pledges import Pledges
from services.usecases.desk_snapshots import DeskSnapshots

log = structlog.get_logger(__name__)

S = TypeVar("S")
# Commands decided and appended together. An on-sale's first burst brings a few hundred at once:
# in one append, their events reach the relay and the read models as one lump, and every one
# of them waits for the whole of it (read models 100-150 ms behind instead of 70-90).
MAX_BATCH = 50
MAX_ATTEMPTS = 8
CONFLICT_PAUSE = 0.002  # seconds, at most, per attempt so far: a random pause after a conflict
# Conflicts in a row after which a desk takes its turn: it holds its streams' append locks while
# it reads, decides and appends, so it cannot lose to another writer again.
TURN_AFTER = 2


class _Look:
    """Decides nothing: the batch it joins reads the stream first if stale."""


class _Read:
    """Decides nothing, and makes the batch it joins read the stream first."""


_LOOK, _READ = _Look(), _Read()


@dataclass
class _Job:
    command: Any
    metadata: Metadata
    companions: tuple[str, ...]
    future: asyncio.Future[Any]


class Desk(Generic[S]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        stream_id: str,
        kind: Kind[S],
        snapshot_every: int = snapshots.SNAPSHOT_EVERY,
        snapshot_pool: asyncpg.Pool | None = None,
    ) -> None:
        """`snapshot_pool`: where snapshots are written (default `pool`): a write holds its
        connection for as long as a large state takes to store, which a desk's appends on a
        small writers' pool should not wait behind."""
        self._pool = pool
        self.stream_id = stream_id
        self._kind = kind
        self.cached: Cached[S] = Cached(kind.initial())
        self.snapshots = DeskSnapshots(
            snapshot_pool or pool, stream_id, self.cached.state, kind.clone, snapshot_every
        )
        self.companions: dict[str, Cached[Any]] = {}
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._queued = DESK_QUEUE_DEPTH.labels(category(stream_id))
        self._batch_sizes = DESK_BATCH_SIZE.labels(category(stream_id))
        self._worker: asyncio.Task[None] | None = None
        self.pledges = Pledges(kind.claims)
        self.conflicts = 0
        self.reloads = 0
        self._stale = True
        # When the cached state was last known to be the stream's (read, or appended at).
        self._in_step_at = float("-inf")

    async def submit(
        self, command: Any, metadata: Metadata, companions: tuple[str, ...] = ()
    ) -> Any:
        """Decide and append `command`, which also decides on the `companions` streams;
        returns its result or raises its DomainError."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(command, metadata, companions, future))
        self._queued.inc()
        if self._worker is None or self._worker.done():
            self._worker = detached(self._work())
        return await future

    def forecast(self, command: Any) -> Decision | None:
        """What `command` would decide on the state as last stored, changing nothing: None when
        it would be refused or the desk has not read its stream yet. Only a guess (another
        process may have sold the seats since): `submit` decides."""
        if self.cached.version == 0:
            return None
        try:
            return self._kind.decide(command, self.cached.state, _states(self.companions))
        except Exception:
            return None

    async def ready(self) -> None:
        """Reads the stream if the desk never has (through the queue: only the worker changes
        the cached state), so that the first buyers get a forecast too."""
        if self.cached.version == 0:
            await self.submit(_LOOK, Metadata())

    @property
    def in_step_at(self) -> float:
        """When (`time.monotonic()`) the cached state was last known to be the stream's."""
        return self._in_step_at

    async def catch_up(self, within: float) -> None:
        """Reads what other processes appended, unless the desk was in step with its stream
        within the last `within` seconds: for readers of `cached` that must not lag far behind
        the stream (seat suggestions while the availability read model lags)."""
        if time.monotonic() - self._in_step_at >= within:
            await self.submit(_READ, Metadata())

    async def close(self) -> None:
        await stop_task(self._worker)
        await self.snapshots.close()

    async def _work(self) -> None:
        while not self._queue.empty():
            jobs = [self._queue.get_nowait()]
            while not self._queue.empty() and len(jobs) < MAX_BATCH:
                jobs.append(self._queue.get_nowait())
            self._queued.dec(len(jobs))
            self._batch_sizes.observe(len(jobs))
            try:
                await self._run_batch(jobs)
            except Exception as exc:
                self._forget()
                fail(jobs, exc)

    def _forget(self) -> None:
        """After an unexpected failure nothing cached is trusted: reload from scratch."""
        self.reloads += 1
        self._stale = True
        self.cached = Cached(self._kind.initial())
        self.companions.clear()

    @property
    def _companion(self) -> Aggregate[Any]:
        assert self._kind.companion is not None, "this desk's commands name no companions"
        return self._kind.companion

    async def _catch_up(self, companions: set[str], db: asyncpg.Pool | asyncpg.Connection) -> None:
        """A desk taking its turn reads on the connection holding it: desks holding all of a
        small pool's connections would otherwise wait for one more."""
        if self.cached.version == 0 and (found := await self.snapshots.start(db)) is not None:
            self.cached = found
        for recorded in await read_stream(db, self.stream_id, self.cached.version):
            self.cached.state = self._kind.evolve(self.cached.state, recorded.event())
            self.cached.version = recorded.version
        for stream in companions:
            cached = self.companions.setdefault(stream, Cached(self._companion.initial()))
            for recorded in await read_stream(db, stream, cached.version):
                cached.state = self._companion.evolve(cached.state, recorded.event())
                cached.version = recorded.version

    async def _run_batch(self, jobs: list[_Job]) -> None:
        """Optimistic: while no other process has been seen writing to the stream, the batch is
        appended at the cached version without reading the stream first, which saves a round
        trip per batch; the append's version check is what keeps it safe. After a conflict, and
        before refusing anyone, the desk reads before it decides. A conflict that fails a
        command alone (one expecting another stream at a version that moved) is no attempt:
        the batch is smaller each time, and each of its commands may meet one (the same drafts
        sent again after their owner answered too late, services/usecases/desk_owners.py)."""
        names = {c for job in jobs for c in job.companions}
        asked_to_read = any(job.command is _READ for job in jobs)
        attempt = 0
        in_a_row = 0
        pause = 0.0
        while attempt < MAX_ATTEMPTS:
            # Two desks that keep conflicting would otherwise keep retrying in step (each reads,
            # decides and appends just as the other does); after TURN_AFTER, one takes its turn.
            if pause:
                await asyncio.sleep(pause)
            pause, unstorable = 0.0, False
            async with self._turn(names, in_a_row >= TURN_AFTER) as db:
                started = time.monotonic()
                fresh = (
                    db is not self._pool
                    or self._stale
                    or asked_to_read
                    or not names <= self.companions.keys()
                )
                if fresh:
                    await self._catch_up(names, db)
                state = Cached(self._kind.clone(self.cached.state), self.cached.version)
                companions = {
                    c: Cached(
                        self._companion.clone(self.companions[c].state),
                        self.companions[c].version,
                    )
                    for c in names
                }
                decided, refused = self._decide_all(jobs, state, companions)
                if not fresh and (
                    any(self._unchecked(decision) for _, decision in decided)
                    or any(not _clash(exc) for _, exc in refused)
                ):
                    # A refusal is final, so it is never made on a state that may be behind
                    # (seats another process released meanwhile): read the stream, decide again.
                    # Nor is a decision that writes other streams and not this one: no version
                    # check of this stream would catch the state it was made on being behind
                    # (an expiry that found no hold another process stored since).
                    self._stale = True
                    attempt += 1
                    continue
                try:
                    if decided:
                        await self._append(db, decided, state, companions)
                except ConcurrencyError as exc:
                    self.conflicts += 1
                    self._stale = True
                    log.info("desk_conflict", stream=exc.stream_id, attempt=attempt)
                    # The desk reads only its own streams: deciding again cannot help a command
                    # that expected another stream (a purchase, a new ticket) at a version that
                    # moved. It fails alone, and its caller reloads that stream.
                    stuck = [job for job, d in decided if exc.stream_id in d.expected]
                    fail(stuck, exc)
                    jobs = [job for job in jobs if job not in stuck]
                    if not jobs:
                        return
                    attempt += not stuck
                    in_a_row += not stuck
                    pause = random.uniform(0, CONFLICT_PAUSE * attempt)
                    continue
                except Exception as exc:
                    if len(jobs) == 1 or not stored_nothing(exc):
                        raise
                    log.warning("desk_append_refused", stream=self.stream_id, error=repr(exc))
                    unstorable = True
            if unstorable:  # outside the turn: each half may take one of its own
                await self._isolate(jobs)
                return
            self._stale = False
            if fresh or any(events for _, d in decided for events in d.events.values()):
                self._in_step_at = started
            self.cached = state
            self.companions.update(companions)
            self.snapshots.take_if_due(self.cached)
            # A caller may have stopped waiting (its request was cancelled): what it decided is
            # stored all the same, and the others still get their answers.
            for job, decision in decided:
                if not job.future.done():
                    job.future.set_result(decision.result)
            for job, exc in refused:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        raise ConcurrencyError(self.stream_id, f"gave up after {MAX_ATTEMPTS} attempts")

    def _unchecked(self, decision: Decision) -> bool:
        """Whether `decision` stores events, none of them on this desk's stream."""
        written = _written(decision)
        return bool(written) and self.stream_id not in written

    def _turn(
        self, companions: set[str], taken: bool
    ) -> contextlib.AbstractAsyncContextManager[asyncpg.Pool | asyncpg.Connection]:
        """Where an attempt reads and appends: the pool, or once `taken`, a connection holding
        the append locks of the desk's stream and its companions (their appends to other
        streams, a new purchase's, come after those in every append's lock order)."""
        if not taken:
            return contextlib.nullcontext(self._pool)
        return streams_held(self._pool, {self.stream_id, *companions})

    async def _isolate(self, jobs: list[_Job]) -> None:
        """The database refused the batch's append and stored nothing (the cached state is
        untouched): decide and append each half on its own, again halving a half that fails,
        so only the command whose events were refused gets the error."""
        half = len(jobs) // 2
        for part in (jobs[:half], jobs[half:]):
            try:
                await self._run_batch(part)
            except Exception as exc:
                self._forget()
                fail(part, exc)

    def _decide_all(
        self, jobs: list[_Job], state: Cached[S], companions: dict[str, Cached[Any]]
    ) -> tuple[list[tuple[_Job, Decision]], list[tuple[_Job, Exception]]]:
        """Each command decides on the state its predecessors in the batch left; a refused
        command fails alone, and only once the batch it was refused in is stored. A command
        that expects a stream of its own (a purchase, a ticket) at a version a command before
        it in the batch writes past is refused with a conflict, as the store would refuse it
        alone: its caller reads that stream again and decides on what the other wrote."""
        decided = []
        refused: list[tuple[_Job, Exception]] = []
        written: set[str] = set()
        for job in jobs:
            if job.command is _LOOK or job.command is _READ:
                decided.append((job, Decision({})))
                continue
            try:
                decision = self._kind.decide(job.command, state.state, _states(companions))
            except Exception as exc:
                refused.append((job, exc))
                continue
            moved = written & decision.expected.keys()
            if moved:
                refused.append((job, ConcurrencyError(min(moved), "written earlier in the batch")))
                continue
            written |= _written(decision) - {self.stream_id} - companions.keys()
            for stream, events in decision.events.items():
                for event in events:
                    if stream == self.stream_id:
                        state.state = self._kind.evolve(state.state, event)
                    elif stream in companions:
                        companion = companions[stream]
                        companion.state = self._companion.evolve(companion.state, event)
            decided.append((job, decision))
        return decided, refused

    async def _append(
        self,
        db: asyncpg.Pool | asyncpg.Connection,
        decided: list[tuple[_Job, Decision]],
        state: Cached[S],
        companions: dict[str, Cached[Any]],
    ) -> None:
        merged: dict[str, list[tuple[Event, Metadata]]] = {}
        expected: dict[str, int] = {}
        for job, decision in decided:
            expected.update(decision.expected)
            for stream, events in decision.events.items():
                merged.setdefault(stream, []).extend((e, job.metadata) for e in events)
        appends = []
        for stream, pairs in merged.items():
            if not pairs:
                continue
            if stream == self.stream_id:
                version = state.version
            elif stream in companions:
                version = companions[stream].version
            else:
                version = expected[stream]
            appends.append(
                PendingAppend(
                    stream, version, [e for e, _ in pairs], metadata=[m for _, m in pairs]
                )
            )
        if not appends:
            return
        # A companion decided on and not written is checked at the version it was read at: a
        # discount's use given back by a purchase's end that the desk saw no redemption of
        # (another process's desk redeemed it since) was lost, with nothing to catch it.
        read = {c for job, _ in decided for c in job.companions}
        read -= {stream for stream, pairs in merged.items() if pairs}
        appends += [PendingAppend(c, companions[c].version, []) for c in sorted(read)]
        versions = await append(db, appends, decided[0][0].metadata)
        state.version = versions.get(self.stream_id, state.version)
        for stream, version in versions.items():
            if stream in companions:
                companions[stream].version = version


def _written(decision: Decision) -> set[str]:
    """The streams `decision` stores events on."""
    return {stream for stream, events in decision.events.items() if events}


def _clash(refusal: Exception) -> bool:
    """Refused for another command of its batch, not for a state that may be behind."""
    return isinstance(refusal, ConcurrencyError)


def _states(companions: dict[str, Cached[Any]]) -> dict[str, Any]:
    return {stream: cached.state for stream, cached in companions.items()}
