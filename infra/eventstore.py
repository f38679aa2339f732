"""The asyncpg event store: atomic multi-stream appends with optimistic concurrency, stream
reads for aggregates, and the safe global read that the relay and rebuilds depend on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from domain.events import Event, decode_event, encode_event
from domain.streams import NEW

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

    @property
    def global_position(self) -> Position:
        return Position(self.tx_id, self.position)

    def event(self) -> Event:
        return decode_event(self.type, bytes(self.data))


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

_COLUMNS = (
    "event_id::text, stream_id, version, type, data::text, metadata::text,"
    " recorded_at, tx_id::text::bigint AS tx_id, position"
)
_SELECT = f"SELECT {_COLUMNS} FROM events "
_SELECT_POSITION = "SELECT tx_id::text::bigint AS tx_id, position FROM events "
_AFTER = "(tx_id, position) > ($1::text::xid8, $2)"
# The safe global order's gate: a transaction older than every one still in flight can no
# longer be overtaken by a commit that would sort before it.
_SETTLED = "tx_id < pg_snapshot_xmin(pg_current_snapshot())"


def _record(row: asyncpg.Record) -> RecordedEvent:
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
    )


class _Columns(msgspec.Struct):
    """The events of an append as the column arrays the SQL takes."""

    event_ids: list[uuid.UUID]
    stream_ids: list[str]
    types: list[str]
    data: list[str]
    metadata: list[str]


def _columns(appends: Sequence[PendingAppend], metadata: Metadata) -> _Columns:
    shared = _metadata_encoder.encode(metadata).decode()
    columns = _Columns([], [], [], [], [])
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
    return columns


async def append(
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
    columns = _columns(appends, metadata)
    if _fits_one_statement(conn, appends):
        return await _append_to_one_stream(conn, appends[0], columns)
    try:
        versions = await conn.fetchval(
            "SELECT append_events($1, $2, $3, $4, $5, $6::jsonb[], $7)",
            streams,
            [a.expected_version for a in appends],
            columns.event_ids,
            columns.stream_ids,
            columns.types,
            columns.data,
            columns.metadata,
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
INSERT INTO events (event_id, stream_id, version, type, data, metadata)
SELECT e.event_id, $1, $2 + e.n::integer, e.type, e.data, e.metadata
FROM locked, unnest($3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[])
    WITH ORDINALITY AS e(event_id, type, data, metadata, n)
WHERE $2 = (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1)
"""


async def _append_to_one_stream(
    conn: asyncpg.Connection | asyncpg.Pool, pending: PendingAppend, columns: _Columns
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
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "events_stream_id_version_key":
            raise
        raise ConcurrencyError(stream, detail) from None
    if status == "INSERT 0 0":
        raise ConcurrencyError(stream, detail)
    return {stream: expected + len(pending.events)}


async def read_stream(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str, after_version: int = 0
) -> list[RecordedEvent]:
    rows = await conn.fetch(
        _SELECT + "WHERE stream_id = $1 AND version > $2 ORDER BY version", stream_id, after_version
    )
    return [_record(r) for r in rows]


async def read_streams(
    conn: asyncpg.Connection | asyncpg.Pool, stream_ids: Sequence[str]
) -> dict[str, list[RecordedEvent]]:
    """Several streams in one round trip (an order's tickets), each in version order; a stream
    with no events is absent."""
    rows = await conn.fetch(
        _SELECT + "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, version", list(stream_ids)
    )
    found: dict[str, list[RecordedEvent]] = {}
    for row in rows:
        found.setdefault(row["stream_id"], []).append(_record(row))
    return found


def joined_stream(stream_id_sql: str) -> str:
    """A LATERAL join of a stream's events, for a query that finds a stream's id in a read model
    and reads the stream in the same round trip; `stream_events` decodes its rows."""
    return (
        f"LEFT JOIN LATERAL ({_SELECT}WHERE stream_id = {stream_id_sql} ORDER BY version) AS e"
        " ON true"
    )


def stream_events(rows: Sequence[asyncpg.Record]) -> list[RecordedEvent]:
    return [_record(r) for r in rows if r["event_id"] is not None]


async def read_all(
    conn: asyncpg.Connection | asyncpg.Pool,
    after: Position = START,
    limit: int = 1000,
    categories: Sequence[str] | None = None,
    up_to: Position | None = None,
) -> list[RecordedEvent]:
    """Events after `after` in global order, only from transactions that can no longer be
    overtaken: anything still in flight, and everything after it, waits for the next read.

    With `up_to`, the caller vouches that everything up to it is already settled (it was read
    through this gate before) and the gate is skipped.
    """
    where = [_AFTER]
    args: list[object] = [str(after.tx_id), after.position]
    if up_to is None:
        where.append(_SETTLED)
    else:
        args += [str(up_to.tx_id), up_to.position]
        where.append(f"(tx_id, position) <= (${len(args) - 1}::text::xid8, ${len(args)})")
    if categories is not None:
        args.append(list(categories))
        where.append(f"split_part(stream_id, '-', 1) = ANY(${len(args)})")
    args.append(limit)
    sql = _SELECT + "WHERE " + " AND ".join(where) + f" ORDER BY tx_id, position LIMIT ${len(args)}"
    return [_record(r) for r in await conn.fetch(sql, *args)]


_NEXT_IS_SETTLED = f"SELECT {_SETTLED} FROM events WHERE {_AFTER} ORDER BY tx_id, position LIMIT 1"


async def next_is_settled(conn: asyncpg.Connection | asyncpg.Pool, after: Position) -> bool | None:
    """Whether the first event after `after` has passed read_all's gate (a read would return
    it now); None if there is no event after `after`."""
    return await conn.fetchval(_NEXT_IS_SETTLED, str(after.tx_id), after.position)


async def head(conn: asyncpg.Connection | asyncpg.Pool) -> Position:
    """The last event in global order, settled or not (for progress reporting and tests)."""
    row = await conn.fetchrow(_SELECT_POSITION + "ORDER BY tx_id DESC, position DESC LIMIT 1")
    return Position(row["tx_id"], row["position"]) if row else START


async def position_of(conn: asyncpg.Connection | asyncpg.Pool, event_id: str) -> Position | None:
    """Where an event stands in the global order; None for an id the store does not have."""
    row = await conn.fetchrow(_SELECT_POSITION + "WHERE event_id = $1::uuid", event_id)
    return Position(row["tx_id"], row["position"]) if row else None


async def first_event_data(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str, type_name: str
) -> str | None:
    """The data (JSON) of a stream's first event if it is a `type_name`: a registration, read
    without the rest of its stream."""
    return await conn.fetchval(
        "SELECT data::text FROM events WHERE stream_id = $1 AND version = 1 AND type = $2",
        stream_id,
        type_name,
    )


class Backlog(msgspec.Struct, frozen=True):
    """Committed events after a position, counted up to a limit, and the age in seconds of the
    oldest of them (None when there is none)."""

    events: int
    oldest_seconds: float | None


_BACKLOG = (
    "SELECT count(*) AS events, extract(epoch FROM clock_timestamp() - min(recorded_at))"
    " AS seconds FROM (SELECT recorded_at FROM events WHERE {only} "
    + _AFTER
    + " ORDER BY {order} LIMIT $3) e"
)
_BACKLOG_ALL = _BACKLOG.format(only="", order="tx_id, position")
# Written as the category index's expression, so the scan starts at the position.
_BACKLOG_OF_CATEGORY = _BACKLOG.format(
    only="split_part(stream_id, '-', 1) = $4 AND",
    order="split_part(stream_id, '-', 1), tx_id, position",
)


async def backlog(
    conn: asyncpg.Connection | asyncpg.Pool,
    after: Position,
    limit: int,
    category: str | None = None,
) -> Backlog:
    """The committed events after `after`, settled or not (only those of `category`, if given):
    how far a reader that has handled everything up to `after` is behind."""
    point = (str(after.tx_id), after.position, limit)
    row = await (
        conn.fetchrow(_BACKLOG_ALL, *point)
        if category is None
        else conn.fetchrow(_BACKLOG_OF_CATEGORY, *point, category)
    )
    seconds = row["seconds"]
    return Backlog(row["events"], None if seconds is None else float(seconds))


class AuditedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A stored event with the name of the API key that caused it, for operators' questions."""

    event: RecordedEvent
    api_key_name: str | None


_AUDITED = (
    f"SELECT {_COLUMNS}, k.name AS api_key_name FROM events"
    " LEFT JOIN api_keys k ON k.id = (metadata->>'api_key_id')::bigint "
)


def _audited(rows: Sequence[asyncpg.Record]) -> list[AuditedEvent]:
    return [AuditedEvent(event=_record(r), api_key_name=r["api_key_name"]) for r in rows]


async def stream_history(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str
) -> list[AuditedEvent]:
    """A stream's events in version order, each with who caused it."""
    rows = await conn.fetch(_AUDITED + "WHERE stream_id = $1 ORDER BY version", stream_id)
    return _audited(rows)


async def audit(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    organization_id: int | None = None,
    api_key_id: int | None = None,
    request_id: str | None = None,
    category: str | None = None,
    type_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[AuditedEvent]:
    """Events newest first, filtered by who caused them and what they are. An organization's
    events are those its API keys caused: events of the command line or workers carry no key."""
    filters = (
        ("k.organization_id = ${}", organization_id),
        ("(metadata->>'api_key_id')::bigint = ${}", api_key_id),
        ("metadata->>'request_id' = ${}", request_id),
        ("split_part(stream_id, '-', 1) = ${}", category),
        ("type = ${}", type_name),
        ("recorded_at >= ${}", since),
        ("recorded_at < ${}", until),
    )
    where: list[str] = []
    args: list[object] = []
    for condition, value in filters:
        if value is not None:
            args.append(value)
            where.append(condition.format(len(args)))
    args.append(limit)
    sql = (
        _AUDITED
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + f"ORDER BY recorded_at DESC, tx_id DESC, position DESC LIMIT ${len(args)}"
    )
    return _audited(await conn.fetch(sql, *args))
