"""The relay: tails the event store in safe global order and publishes each event to JetStream.

Exactly once in effect: every message carries `Nats-Msg-Id` = event id (JetStream drops a
re-publish) and `Nats-Expected-Last-Msg-Id` = the previous event id (JetStream refuses to store
an event out of order after a partial failure). The checkpoint is written only after the ack, and
on start or after any error the relay re-reads the stream's last message, so a crash between ack
and checkpoint never republishes or skips anything.

It wakes on NOTIFY, which appends send only while the relay holds the sleep lock: it takes the
lock when it runs dry and lets go when a pass finds more than a quiet batch, so under load
appends do not notify (and do not queue on the database-wide lock a notifying commit holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NotFoundError

from infra.bus import ensure_stream, subject_for
from infra.eventstore import NOTIFY_CHANNEL, RELAY_SLEEP_LOCK, START, Position, RecordedEvent
from infra.global_order import next_is_settled, position_of, read_all
from infra.metrics import RELAY_PUBLISHED
from infra.settings import Settings
from infra.supervise import OUTAGES, honour_cancellation, serve_forever
from services.health import behind

log = structlog.get_logger(__name__)

CHECKPOINT_SECONDS = 0.05  # at most this long between checkpoint writes while the relay is busy

_encoder = msgspec.json.Encoder()


class Checkpoint(msgspec.Struct, frozen=True):
    position: Position
    event_id: str | None


_Sent = tuple[RecordedEvent, "asyncio.Future[PubAck]"]


class Relay:
    """One relay per event store; run a second one only as a standby (they do not share work).

    `quiet_batch`: a pass publishing more events than this ends the listening (notifications
    cost writers more than they save the relay then). `held_back_poll_seconds`: how soon to look
    again when the next event waits for an older transaction that may never notify.
    `checkpoint_seconds`: the longest a busy relay goes without writing its checkpoint.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        settings: Settings,
        *,
        name: str = "main",
        batch_size: int = 500,
        idle_poll_seconds: float = 1.0,
        held_back_poll_seconds: float = 0.005,
        quiet_batch: int = 4,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self._pool = pool
        self._db: asyncpg.Pool | asyncpg.Connection = pool  # its own connection while it runs
        self._js = js
        self._settings = settings
        self._name = name
        self._batch_size = batch_size
        self._idle_poll = idle_poll_seconds
        self._held_back_poll = held_back_poll_seconds
        self._quiet_batch = quiet_batch
        self._checkpoint_every = checkpoint_seconds
        self._wake = asyncio.Event()
        self._checkpoint = Checkpoint(START, None)
        self._stored = self._checkpoint  # as last written to the database
        self._stored_at = float("-inf")
        # The last event handed to NATS, acked or not, and the acks of the last pass still due.
        self._sent = self._checkpoint
        self._in_flight: list[_Sent] = []
        self._started = False
        self.published = 0

    async def run(self) -> None:
        """Publish until cancelled; survives database and NATS outages by retrying."""
        await serve_forever(self._serve, "relay")

    async def _serve(self) -> None:
        # The relay's own connection listens, holds the sleep lock and runs every query: a pool
        # connection costs a reset round trip per use. A checkpoint write lost in a crash costs
        # nothing (reconcile finds the stream's last message), so it need not wait for a flush.
        conn = await asyncpg.connect(
            self._settings.database_url, server_settings={"synchronous_commit": "off"}
        )
        self._db = conn
        try:
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            await ensure_stream(self._js, self._settings)
            await self.reconcile()
            await self._tell_start()
            while True:
                while await self.publish_pending():
                    pass
                await self._listen(conn)
        finally:
            self._db = self._pool
            with contextlib.suppress(Exception):
                await conn.close()

    async def _tell_start(self) -> None:
        """One line when the relay starts and each time it resumes after a failure: where it
        stands and how far behind the event store that is. Both servers answered to get here."""
        OUTAGES.up("postgresql")
        OUTAGES.up("nats")
        lag = await behind(self._db, self._checkpoint.position)
        log.info(
            "relay_resumed" if self._started else "relay_started",
            relay=self._name,
            position=[self._checkpoint.position.tx_id, self._checkpoint.position.position],
            behind_events=lag["events"],
            behind_seconds=lag["seconds"],
        )
        self._started = True

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """Publish as appends notify, until a pass finds more than a quiet batch.

        Appends notify only while the relay holds the sleep lock: a notifying commit holds a
        database-wide lock until it is flushed, so under load notifying would serialise every
        writer, while a busy relay needs no wake-up. Taking the lock waits out the appends that
        found it free (and so will not notify); every later one notifies. On an error the lock
        goes with the connection."""
        await conn.execute("SELECT pg_advisory_lock($1)", RELAY_SLEEP_LOCK)
        while True:
            self._wake.clear()
            if await self.publish_pending() > self._quiet_batch:
                break
            await self._settle()
            await self._wait()
        await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_SLEEP_LOCK)

    async def _wait(self) -> None:
        """Wait for a notification. An event held back by a transaction still open becomes
        publishable when that ends, which notifies only if it was an append: look again soon."""
        if self._wake.is_set():
            return
        settled = await next_is_settled(self._db, self._sent.position)
        if settled:
            return
        wait = self._idle_poll if settled is None else self._held_back_poll
        # asyncio.timeout, here and below, not wait_for: on Python 3.11 wait_for can swallow a
        # cancellation that comes as it ends, and the relay would never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()

    async def reconcile(self) -> None:
        """Take the checkpoint from the database, then move it to the stream's last message if
        that is further along (the ack came back but the checkpoint write did not happen), and
        send on from there."""
        self._checkpoint = await self._stream_checkpoint()
        self._resume_at_checkpoint()

    async def _stream_checkpoint(self) -> Checkpoint:
        row = await self._db.fetchrow(
            "SELECT tx_id::text::bigint AS tx_id, position, event_id::text FROM relay_checkpoint"
            " WHERE name = $1",
            self._name,
        )
        stored = (
            Checkpoint(Position(row["tx_id"], row["position"]), row["event_id"])
            if row
            else (Checkpoint(START, None))
        )
        info = await self._js.stream_info(self._settings.nats_stream)
        last_seq = info.state.last_seq
        if last_seq == 0:
            if stored.event_id is not None:
                log.warning(
                    "relay_stream_empty_republishing_all", stream=self._settings.nats_stream
                )
            return Checkpoint(START, None)
        try:
            last = await self._js.get_msg(self._settings.nats_stream, seq=last_seq)
        except NotFoundError:
            return stored
        last_id = (last.headers or {}).get("Nats-Msg-Id")
        found = await position_of(self._db, last_id) if last_id else None
        if found is None:
            log.error("relay_unknown_last_message", msg_id=last_id)
            return stored
        furthest = max(stored, Checkpoint(found, last_id), key=lambda c: c.position)
        if furthest != stored:
            await self._store(furthest)
        return furthest

    def _resume_at_checkpoint(self) -> None:
        """Forget what is in flight: the stream, not this process, says what arrived."""
        for _, future in self._in_flight:
            future.cancel()
        self._in_flight = []
        self._sent = self._checkpoint

    async def publish_pending(self) -> int:
        """One pass: send the next settled batch in order, then take the acks of the pass before
        and checkpoint them. The two overlap: the acks come back while the next batch is read
        and sent, so under load a pass costs a read and a send, not the acks' round trip as
        well. A pass that finds nothing new has taken every ack due: returning 0, it leaves
        everything sent acked and checkpointed."""
        batch = await read_all(self._db, self._sent.position, self._batch_size)
        earlier, self._in_flight = self._in_flight, await self._send(batch)
        if batch:
            self._sent = Checkpoint(batch[-1].global_position, batch[-1].event_id)
        await self._take_acks(earlier, store_now=not batch)
        honour_cancellation()  # a cancellation that nats-py lost while publishing
        return len(batch)

    async def _settle(self) -> None:
        """Takes every ack due: a quiet relay waits with nothing unacked or unchecked."""
        sent, self._in_flight = self._in_flight, []
        await self._take_acks(sent, store_now=True)

    async def _take_acks(self, sent: list[_Sent], *, store_now: bool) -> None:
        """Checkpoint the acked prefix of a pass; on a refusal, go back to what the stream holds
        (the later messages, expecting the refused one before them, are refused too). A busy
        relay stores its checkpoint at most every `checkpoint_seconds`, a pass that sent nothing
        at once: it says how far the relay is (readiness, lag reports) and where a restart
        starts looking, and a restart moves on to the stream's last message anyway
        (`reconcile`), so a write per pass only made every pass a round trip longer."""
        acked = await acked_prefix(sent)
        if acked:
            last = sent[acked - 1][0]
            self._checkpoint = Checkpoint(last.global_position, last.event_id)
            self.published += acked
            RELAY_PUBLISHED.inc(acked)
        due = time.monotonic() - self._stored_at >= self._checkpoint_every
        if self._checkpoint != self._stored and (store_now or due):
            await self._store(self._checkpoint)
        if acked < len(sent):
            await self.reconcile()
            raise RuntimeError(f"published {acked} of {len(sent)} events; will retry the rest")

    async def _send(self, batch: list[RecordedEvent]) -> list[_Sent]:
        """The batch written in order on one connection, each message expecting the one before
        it as the stream's last."""
        previous = self._sent.event_id
        sent = []
        for event in batch:
            headers = {"Nats-Msg-Id": event.event_id}
            if previous is not None:
                headers["Nats-Expected-Last-Msg-Id"] = previous
            future = await self._js.publish_async(
                subject_for(self._settings, event.stream_id),
                _encoder.encode(event),
                headers=headers,
            )
            sent.append((event, future))
            previous = event.event_id
        return sent

    async def _store(self, checkpoint: Checkpoint) -> None:
        self._stored_at = time.monotonic()
        await self._db.execute(
            "INSERT INTO relay_checkpoint (name, tx_id, position, event_id)"
            " VALUES ($1, $2::text::xid8, $3, $4::uuid)"
            " ON CONFLICT (name) DO UPDATE SET tx_id = EXCLUDED.tx_id,"
            " position = EXCLUDED.position, event_id = EXCLUDED.event_id",
            self._name,
            str(checkpoint.position.tx_id),
            checkpoint.position.position,
            checkpoint.event_id,
        )
        self._stored = checkpoint


async def acked_prefix(sent: list[_Sent]) -> int:
    """How many of the messages sent, from the first, were acked; the rest are cancelled."""
    acked = 0
    for _, future in sent:
        try:
            async with asyncio.timeout(10):
                await future
        except (APIError, TimeoutError) as exc:
            # In a NATS outage every pass ends here: the outage is told once, elsewhere.
            tell = log.debug if OUTAGES.is_down("nats") else log.warning
            tell("relay_publish_failed", error=repr(exc), acked=acked)
            break
        acked += 1
    for _, future in sent[acked:]:
        future.cancel()
    return acked
