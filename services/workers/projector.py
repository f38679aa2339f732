"""The projector worker: one durable JetStream pull consumer for the read models it keeps, each
batch applied to all of them with their checkpoints in one transaction and acknowledged only
after that commit. A read model whose batch fails while the others' do not is set apart: it goes
on with a consumer of its own, retrying from its checkpoint, and holds the others up no longer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from domain import streams
from infra.bus import ensure_stream
from infra.eventstore import RecordedEvent
from infra.settings import Settings
from infra.supervise import (
    OUTAGES,
    dependency_of,
    honour_cancellation,
    serve_forever,
    stop_task,
)
from projections.framework import (
    Projection,
    apply_batch,
    apply_together,
    ensure_live_schema,
    live_schema,
    read_checkpoint,
    read_stream_seq,
)
from services.health import behind

log = structlog.get_logger(__name__)

_decoder = msgspec.json.Decoder(RecordedEvent)
STANDBY_SECONDS = 0.5  # how often a standby projector asks whether it may take over


def consumer_name(*projections: Projection) -> str:
    """`projection_NAME` for one read model; for several, a name that changes with the set."""
    if len(projections) == 1:
        return f"projection_{projections[0].name}"
    names = "+".join(sorted(p.name for p in projections))
    return f"projections_{zlib.crc32(names.encode()):08x}"


def _categories(projections: Sequence[Projection]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for p in projections for c in p.categories))


def _filter(prefix: str, categories: tuple[str, ...]) -> dict[str, Any]:
    """One category is a plain filter subject, understood by every JetStream server; several
    need `filter_subjects` (NATS 2.10+)."""
    subjects = [f"{prefix}.{c}" for c in categories]
    if len(subjects) == 1:
        return {"filter_subject": subjects[0]}
    return {"filter_subjects": subjects}


class Projector:
    """Keeps read models up to date. Several instances of the same read models may run: one
    applies, the others stand by (`_lead`) and take over when it stops."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        settings: Settings,
        *projections: Projection,
        batch_size: int = 2000,
        gather_seconds: float = 0.002,
    ) -> None:
        self._pool = pool
        self._js = js
        self._settings = settings
        self.projections = list(projections)
        self._consumer = consumer_name(*projections)
        self._set_apart: list[asyncio.Task[None]] = []
        self._batch_size = batch_size
        self._gather = gather_seconds
        self.applied = 0
        self.lag_samples: list[float] = []
        self.record_lag = False
        self._started = False

    async def run(self) -> None:
        names = ",".join(p.name for p in self.projections)
        try:
            await serve_forever(self._serve, "projector", projection=names)
        finally:
            for task in self._set_apart:
                await stop_task(task)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        """(Re)create the durable consumer at the checkpoint kept in PostgreSQL, which is the
        truth: after a crash or a failed batch, delivery restarts in order right after the last
        committed message, never with a gap that a later redelivery would have to fill."""
        stream = self._settings.nats_stream
        await ensure_stream(self._js, self._settings)
        for projection in self.projections:
            await ensure_live_schema(self._pool, projection)
        resume_after = min(
            [await read_stream_seq(self._pool, live_schema(p)) for p in self.projections]
        )
        info = await self._js.stream_info(stream)
        if resume_after > info.state.last_seq:
            log.warning("projector_stream_reset", consumer=self._consumer)
            resume_after = 0
        for projection in self.projections:
            await self._tell_start(projection, resume_after)
        self._started = True
        name = self._consumer
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(stream, name)
        prefix = self._settings.subject_prefix
        await self._js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=name,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=resume_after + 1,
                ack_policy=AckPolicy.ALL,
                ack_wait=60,
                max_ack_pending=20_000,
                **_filter(prefix, _categories(self.projections)),
            ),
        )
        return await self._js.pull_subscribe_bind(durable=name, stream=stream)

    async def _tell_start(self, projection: Projection, resume_after: int) -> None:
        """One line when the projector starts and each time it resumes after a failure: the
        stream sequence it resumes after and how far its read model is behind the event store.
        Both servers answered to get here."""
        OUTAGES.up("postgresql")
        OUTAGES.up("nats")
        schema = live_schema(projection)
        lag = await behind(
            self._pool, await read_checkpoint(self._pool, schema), projection.categories
        )
        log.info(
            "projector_resumed" if self._started else "projector_started",
            projection=projection.name,
            stream_seq=resume_after,
            behind_events=lag["events"],
            behind_seconds=lag["seconds"],
        )

    async def _serve(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            # Its own connection: a pool connection costs a reset round trip per batch. Rows and
            # checkpoint commit together, so a commit lost in a crash is only applied again (the
            # consumer resumes after the checkpoint that survived): no need to wait for a flush.
            conn = await asyncpg.connect(
                self._settings.database_url, server_settings={"synchronous_commit": "off"}
            )
            stack.push_async_callback(conn.close)
            await self._lead(conn)
            sub = await self._subscribe()
            stack.push_async_callback(sub.unsubscribe)
            # The next batch is fetched while this one is applied: under load the events that
            # came in meanwhile are here when the commit is done, not a pull later.
            coming = asyncio.ensure_future(self._next_batch(sub))
            stack.push_async_callback(lambda: stop_task(coming))
            while True:
                messages = await coming
                coming = asyncio.ensure_future(self._next_batch(sub))
                if messages:
                    await self._apply(conn, messages, [_decoder.decode(m.data) for m in messages])

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Waits until no other process consumes this durable consumer: JetStream would deal
        the batches out between them, and each would move the read models' checkpoints past
        events the other had not applied yet, which would then never be. The lock is held by
        `conn`'s session, so a projector that dies hands over to a standby at once."""
        key = zlib.crc32(f"projector:{self._consumer}".encode())
        standing_by = False
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            if not standing_by:
                log.info("projector_standby", consumer=self._consumer)
                standing_by = True
            await asyncio.sleep(STANDBY_SECONDS)

    async def _apply(
        self, conn: asyncpg.Connection, messages: list[Msg], events: list[RecordedEvent]
    ) -> None:
        """A batch and the checkpoints after its last message in one transaction; then the
        messages up to it are acknowledged."""
        last_seq = messages[-1].metadata.sequence.stream
        try:
            self.applied += await apply_together(conn, self.projections, events, last_seq)
        except Exception as exc:
            if len(self.projections) == 1 or dependency_of(exc) is not None:
                raise
            await self._apply_apart(conn, events, last_seq, exc)
        for projection in self.projections:
            _tell_applied(projection, events)
        if self.record_lag:
            now = time.time()
            self.lag_samples.extend(now - e.recorded_at.timestamp() for e in events)
        await messages[-1].ack()

    async def _apply_apart(
        self, conn: asyncpg.Connection, events: list[RecordedEvent], last_seq: int, exc: Exception
    ) -> None:
        """The batch failed for the read models together: each is tried on its own. Those that
        fail alone are set apart, each with a projector of its own that retries from its own
        checkpoint; the others go on here. When all fail alone, the cause is not one read
        model (the database went away): the batch's error goes to the retry loop."""
        failed = []
        for projection in self.projections:
            try:
                self.applied += await apply_batch(conn, projection, events, last_seq)
            except Exception as alone:
                if dependency_of(alone) is not None:
                    raise
                failed.append((projection, alone))
        if len(failed) == len(self.projections):
            raise exc
        for projection, alone in failed:
            log.error("projection_set_apart", projection=projection.name, error=repr(alone))
            self.projections.remove(projection)
            single = Projector(self._pool, self._js, self._settings, projection)
            self._set_apart.append(asyncio.create_task(single.run()))

    async def _next_batch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next message as soon as it arrives, with whatever else is already there (empty after
        an idle second). One pull for a whole batch would hold the first message back until
        the batch fills or the pull expires."""
        messages: list[Msg] = []
        with contextlib.suppress(NatsTimeout, TimeoutError):
            messages = await sub.fetch(1, timeout=1.0)
            if self._batch_size > 1:
                messages += await sub.fetch(self._batch_size - 1, timeout=self._gather)
        honour_cancellation()
        return messages


def _tell_applied(projection: Projection, events: list[RecordedEvent]) -> None:
    """At debug, a line per event of the read model's categories once its rows are committed
    (again for one redelivered after a crash): with its correlation id, the line takes a
    request id to the read models it changed and when."""
    if not log.is_enabled_for(logging.DEBUG):
        return
    for event in events:
        if streams.category(event.stream_id) in projection.categories:
            log.debug(
                "projection_applied",
                projection=projection.name,
                event_id=event.event_id,
                stream_id=event.stream_id,
                type=event.type,
                correlation_id=event.metadata.correlation_id,
                causation_id=event.metadata.causation_id,
            )
