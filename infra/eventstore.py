"""The asyncpg event store: atomic multi-stream appends with optimistic concurrency and stream
reads for aggregates. The safe global read that the relay and rebuilds depend on is
infra/global_order.py; the group commit's statement, infra/append_batcher.py."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

import asyncpg
import msgspec

from domain.events import Event, current_data, decode_event, encode_event
from domain.streams import NEW
from domain.streams import category as stream_category
from infra.metrics import APPEND_CONFLICTS, observe_append

ANY_VERSION = -1
NO_STREAM = NEW

# The relay holds this advisory lock while it sleeps; appends notify NOTIFY_CHANNEL only then,
# as a notifying commit holds a database-wide lock until it is flushed (services/workers/relay.py).
# append_events in the migration uses the same two values.
RELAY_SLEEP_LOCK = 7_301_002
NOTIFY_CHANNEL = "linjerum_events"


class ConcurrencyError(Exception):
    """Another writer appended to `stream_id` first; reload the aggregate and decide again."""

    def __init__(self, stream_id: str, detail: str = "") -> None:
        super().__init__(f"concurrency conflict on stream {stream_id}: {detail}".rstrip(": "))
        self.stream_id = stream_id


class Metadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who caused an event and why: the audit trail the design relies on."""

    request_id: str | None = None
    api_key_id: int | None = None
    actor: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None

    def in_chain_of(self, event: RecordedEvent) -> Metadata:
        """This metadata in `event`'s chain: its correlation id, the request id of the HTTP
        call that started the chain (for an event stored before correlation ids, its own
        request id), so `linjerum audit --correlation` finds every link."""
        return self.joining(event.metadata)

    def joining(self, stored: Metadata) -> Metadata:
        """This metadata in the chain of an event stored with `stored` (`in_chain_of`)."""
        return msgspec.structs.replace(
            self, correlation_id=stored.correlation_id or stored.request_id
        )

    def caused_by(self, cause: RecordedEvent) -> Metadata:
        """This metadata for what a worker appends in reaction to `cause`: in its chain, with
        `cause` as the causation id."""
        return msgspec.structs.replace(self.in_chain_of(cause), causation_id=cause.event_id)


class Position(msgspec.Struct, frozen=True, order=True, array_like=True):
    """A point in the global order: transaction id first, then position inside it."""

    tx_id: int
    position: int


START = Position(0, 0)


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored: the envelope travels over NATS with the data as raw JSON."""

    event_id: str
    stream_id: str
    version: int
    type: str
    data: msgspec.Raw
    metadata: Metadata
    recorded_at: datetime
    tx_id: int
    position: int
    # The shape `data` was written in (domain/upcasting.py); envelopes from before it are 1.
    schema_version: int = 1

    @property
    def global_position(self) -> Position:
        return Position(self.tx_id, self.position)

    def event(self) -> Event:
        """The event in its type's current shape, upcast if it was stored in an older one."""
        return decode_event(self.type, bytes(self.data), schema_version=self.schema_version)


class PendingAppend(msgspec.Struct, frozen=True):
    """Events for one stream, and the version the writer decided them against. `metadata`,
    one per event, is for appends that carry several callers' commands (a sales desk's
    batch); without it every event gets the append's metadata."""

    stream_id: str
    expected_version: int
    events: Sequence[Event]
    metadata: Sequence[Metadata] | None = None


_metadata_encoder = msgspec.json.Encoder()
_metadata_decoder = msgspec.json.Decoder(Metadata)

COLUMNS = (
    "event_id::text, stream_id, version, type, data::text, metadata::text,"
    " recorded_at, tx_id::text::bigint AS tx_id, position, schema_version"
)
SELECT_EVENTS = f"SELECT {COLUMNS} FROM events "


def recorded(row: asyncpg.Record) -> RecordedEvent:
    """A row of COLUMNS."""
    return RecordedEvent(
        event_id=row["event_id"],
        stream_id=row["stream_id"],
        version=row["version"],
        type=row["type"],
        data=msgspec.Raw(row["data"].encode()),
        metadata=_metadata_decoder.decode(row["metadata"]),
        recorded_at=row["recorded_at"],
        tx_id=row["tx_id"],
        position=row["position"],
        schema_version=row["schema_version"],
    )


class EventColumns(msgspec.Struct):
    """The events of an append as the column arrays the SQL takes."""

    event_ids: list[uuid.UUID]
    stream_ids: list[str]
    types: list[str]
    data: list[str]
    metadata: list[str]
    schema_versions: list[int]


def event_columns(appends: Sequence[PendingAppend], metadata: Metadata) -> EventColumns:
    shared = _metadata_encoder.encode(metadata).decode()
    columns = EventColumns([], [], [], [], [], [])
    for pending in appends:
        if pending.metadata is not None and len(pending.metadata) != len(pending.events):
            raise ValueError("one metadata per event")
        for i, event in enumerate(pending.events):
            own = pending.metadata[i] if pending.metadata is not None else None
            columns.metadata.append(
                shared if own is None else _metadata_encoder.encode(own).decode()
            )
            columns.event_ids.append(uuid.uuid4())
            columns.stream_ids.append(pending.stream_id)
            columns.types.append(event.type_name)
            columns.data.append(encode_event(event).decode())
            columns.schema_versions.append(event.schema_version)
    return columns


async def append(
    conn: asyncpg.Connection | asyncpg.Pool,
    appends: Sequence[PendingAppend],
    metadata: Metadata,
) -> dict[str, int]:
    """`_append`, counted and timed for /metrics by the category of its first stream."""
    kind = stream_category(appends[0].stream_id) if appends else "none"
    started = time.perf_counter()
    try:
        return await _append(conn, appends, metadata)
    except ConcurrencyError:
        APPEND_CONFLICTS.labels(kind).inc()
        raise
    finally:
        observe_append(kind, time.perf_counter() - started)


async def _append(
    conn: asyncpg.Connection | asyncpg.Pool,
    appends: Sequence[PendingAppend],
    metadata: Metadata,
) -> dict[str, int]:
    """Append every stream's events in one transaction; returns each stream's new version.

    Raises ConcurrencyError naming the first stream whose version moved; nothing is stored then.
    Pass a connection inside an open transaction to make other writes atomic with the append;
    the append must come before them (the store refuses otherwise, see the migration).
    """
    streams = [a.stream_id for a in appends]
    if len(set(streams)) != len(streams):
        raise ValueError("each stream may appear once per append")
    columns = event_columns(appends, metadata)
    if _fits_one_statement(conn, appends):
        return await _append_to_one_stream(conn, appends[0], columns)
    try:
        versions = await conn.fetchval(
            "SELECT append_events($1, $2, $3, $4, $5, $6::jsonb[], $7, $8)",
            streams,
            [a.expected_version for a in appends],
            columns.event_ids,
            columns.stream_ids,
            columns.types,
            columns.data,
            columns.metadata,
            columns.schema_versions,
        )
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == "LJ001":
            raise ConcurrencyError(exc.args[0] if exc.args else "?", exc.detail or "") from None
        raise
    return dict(zip(streams, versions, strict=True))


def _fits_one_statement(
    conn: asyncpg.Connection | asyncpg.Pool, appends: Sequence[PendingAppend]
) -> bool:
    """The common append, to one stream at a known version and outside any transaction of the
    caller's, takes one plain statement: through append_events, PL/pgSQL costs more than the
    insert itself."""
    if len(appends) != 1 or appends[0].expected_version < NO_STREAM or not appends[0].events:
        return False
    return isinstance(conn, asyncpg.Pool) or not conn.is_in_transaction()


# append_events for one stream at a known version. Rows are inserted only joined with `locked`,
# so the stream lock is held before the first insert gives the transaction its id, as the relay's
# order needs. The version check may read a snapshot from before the lock was granted: if another
# append committed meanwhile, this insert collides with its version on the (stream_id, version)
# key. A conflict either way, never a gap.
_APPEND_TO_ONE_STREAM = """
WITH locked AS (
    SELECT pg_advisory_xact_lock(hashtextextended($1, 0)),
           CASE WHEN NOT pg_try_advisory_xact_lock_shared($7) THEN pg_notify($8, '') END
)
INSERT INTO events (event_id, stream_id, version, type, data, metadata, schema_version)
SELECT e.event_id, $1, $2 + e.n::integer, e.type, e.data, e.metadata, e.schema_version
FROM locked, unnest($3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[], $9::smallint[])
    WITH ORDINALITY AS e(event_id, type, data, metadata, schema_version, n)
WHERE $2 = (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1)
"""


async def _append_to_one_stream(
    conn: asyncpg.Connection | asyncpg.Pool, pending: PendingAppend, columns: EventColumns
) -> dict[str, int]:
    stream, expected = pending.stream_id, pending.expected_version
    detail = f"expected version {expected}, the stream is elsewhere"
    try:
        status = await conn.execute(
            _APPEND_TO_ONE_STREAM,
            stream,
            expected,
            columns.event_ids,
            columns.types,
            columns.data,
            columns.metadata,
            RELAY_SLEEP_LOCK,
            NOTIFY_CHANNEL,
            columns.schema_versions,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "events_stream_id_version_key":
            raise
        raise ConcurrencyError(stream, detail) from None
    if status == "INSERT 0 0":
        raise ConcurrencyError(stream, detail)
    return {stream: expected + len(pending.events)}


@contextlib.asynccontextmanager
async def streams_held(
    pool: asyncpg.Pool, streams: Iterable[str]
) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding each stream's append lock (the advisory lock every append takes per
    stream, here for the session, in the same order): until the block ends no other session can
    append to them, while `append` on this connection can. For a writer that must not lose
    to another again."""
    async with pool.acquire() as conn:
        try:
            for stream in sorted(set(streams)):
                await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", stream)
            yield conn
        finally:
            # A connection that broke took its locks with it; the pool resets it anyway.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock_all()")


async def read_stream(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str, after_version: int = 0
) -> list[RecordedEvent]:
    rows = await conn.fetch(
        SELECT_EVENTS + "WHERE stream_id = $1 AND version > $2 ORDER BY version",
        stream_id,
        after_version,
    )
    return [recorded(r) for r in rows]


async def read_streams(
    conn: asyncpg.Connection | asyncpg.Pool, stream_ids: Sequence[str]
) -> dict[str, list[RecordedEvent]]:
    """Several streams in one round trip (an order's tickets), each in version order; a stream
    with no events is absent."""
    rows = await conn.fetch(
        SELECT_EVENTS + "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, version",
        list(stream_ids),
    )
    found: dict[str, list[RecordedEvent]] = {}
    for row in rows:
        found.setdefault(row["stream_id"], []).append(recorded(row))
    return found


async def count_types(conn: asyncpg.Connection | asyncpg.Pool, stream_id: str) -> dict[str, int]:
    """How many events of each type a stream holds, as committed: what a read model counts
    from the same events may still be a moment behind, and a count is read without decoding
    one event."""
    rows = await conn.fetch(
        "SELECT type, count(*) AS n FROM events WHERE stream_id = $1 GROUP BY type", stream_id
    )
    return {row["type"]: row["n"] for row in rows}


def joined_stream(stream_id_sql: str) -> str:
    """A LATERAL join of a stream's events, for a query that finds a stream's id in a read model
    and reads the stream in the same round trip; `stream_events` decodes its rows."""
    return (
        f"LEFT JOIN LATERAL ({SELECT_EVENTS}WHERE stream_id = {stream_id_sql}"
        " ORDER BY version) AS e ON true"
    )


def stream_events(rows: Sequence[asyncpg.Record]) -> list[RecordedEvent]:
    return [recorded(r) for r in rows if r["event_id"] is not None]


async def first_event_data(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str, type_name: str
) -> bytes | str | None:
    """The data (JSON, in the type's current shape) of a stream's first event if it is a
    `type_name`: a registration, read without the rest of its stream."""
    row = await conn.fetchrow(
        "SELECT data::text, schema_version FROM events"
        " WHERE stream_id = $1 AND version = 1 AND type = $2",
        stream_id,
        type_name,
    )
    return None if row is None else current_data(type_name, row["data"], row["schema_version"])
