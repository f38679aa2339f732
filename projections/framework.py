"""What every read model shares: its own schema, a checkpoint applied in the same transaction
as the rows, and an advisory lock that keeps a live projector and a rebuild's swap apart."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Protocol, cast

import asyncpg

from domain import streams
from infra.changes import read_model_channel
from infra.eventstore import START, Position, RecordedEvent


class Projection(Protocol):
    """A read model: DDL for its tables (with `{schema}` placeholders) and a pure mapping from
    events to SQL run on the given connection, inside the framework's transaction: one event at
    a time (`OneByOne`), or a whole batch in a few set-wise statements (`SetWise`)."""

    name: ClassVar[str]
    categories: ClassVar[tuple[str, ...]]
    tables_sql: ClassVar[str]


def passes_by(projection: Projection, events: Sequence[RecordedEvent]) -> bool:
    """True when no event of `events` can change the read model: the projection names the event
    types it reads (`handles`, optional) and none is among them. The gateways are then not told
    of a change: a sale's seat holds pass the catalog by, and must not empty every gateway's
    catalog cache."""
    handles: frozenset[str] | None = getattr(projection, "handles", None)
    return handles is not None and not any(e.type in handles for e in events)


class OneByOne(Projection, Protocol):
    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None: ...


class SetWise(Projection, Protocol):
    """A read model busy during an on-sale: a statement per event would cost a round trip
    each. `apply_all` must leave the rows as applying `events` one by one in order would, so a
    rebuild's batches and the live projector's (cut anywhere) give the same rows."""

    async def apply_all(
        self, conn: asyncpg.Connection, schema: str, events: Sequence[RecordedEvent]
    ) -> None: ...


def live_schema(projection: Projection) -> str:
    return f"rm_{projection.name}"


def lock_key(projection: Projection) -> int:
    """Advisory lock id per projection: held by each apply and by the rebuild's final swap."""
    return zlib.crc32(f"projection:{projection.name}".encode())


async def create_schema(conn: asyncpg.Connection, projection: Projection, schema: str) -> None:
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(
        f"CREATE TABLE {schema}.checkpoint (id boolean PRIMARY KEY DEFAULT true CHECK (id),"
        " tx_id xid8 NOT NULL, position bigint NOT NULL, stream_seq bigint NOT NULL)"
    )
    await conn.execute(
        f"INSERT INTO {schema}.checkpoint (tx_id, position, stream_seq) VALUES ('0', 0, 0)"
    )
    await conn.execute(projection.tables_sql.format(schema=schema))


async def ensure_live_schema(pool: asyncpg.Pool, projection: Projection) -> None:
    """Create the live tables on first start; a no-op afterwards."""
    schema = live_schema(projection)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(projection))
        exists = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
        )
        if not exists:
            await create_schema(conn, projection, schema)


async def read_checkpoint(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> Position:
    row = await conn.fetchrow(
        f"SELECT tx_id::text::bigint AS tx_id, position FROM {schema}.checkpoint"
    )
    return Position(row["tx_id"], row["position"]) if row else START


async def read_stream_seq(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> int:
    """The JetStream sequence of the last live message applied: where a projector resumes."""
    return await conn.fetchval(f"SELECT stream_seq FROM {schema}.checkpoint") or 0


def _set_wise(projection: Projection) -> bool:
    """Whether `projection` applies a batch at once. Not isinstance against the runtime-checkable
    protocol: that inspects every member each time (18 µs), and the live projector asked it for
    each read model of each batch, 8 % of its CPU in the paid orders."""
    return callable(getattr(projection, "apply_all", None))


async def _apply(
    conn: asyncpg.Connection,
    projection: Projection,
    schema: str,
    events: Sequence[RecordedEvent],
) -> None:
    if _set_wise(projection):
        await cast(SetWise, projection).apply_all(conn, schema, events)
        return
    one_by_one = cast(OneByOne, projection)
    for event in events:
        await one_by_one.apply(conn, schema, event)


async def apply_events(
    conn: asyncpg.Connection,
    projection: Projection,
    schema: str,
    events: Sequence[RecordedEvent],
) -> int:
    """Apply the events not yet applied and move the checkpoint (a rebuild's unit of work); call
    inside a transaction that already holds the projection's lock. Returns how many were new.
    Events of other categories only move the checkpoint: a NATS server older than 2.10 ignores a
    consumer's list of filter subjects and delivers everything."""
    checkpoint = await read_checkpoint(conn, schema)
    new, mine = _unapplied(projection, events, checkpoint)
    if mine:
        await _apply(conn, projection, schema, mine)
    if new:
        last = new[-1].global_position
        await conn.execute(
            _move_checkpoints_sql([schema]), None, str(last.tx_id), last.position, []
        )
    return len(new)


def _unapplied(
    projection: Projection, events: Sequence[RecordedEvent], checkpoint: Position
) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
    """The events (in the global order) after the checkpoint, and those of them in the
    projection's categories."""
    new = [e for e in events if e.global_position > checkpoint]
    return new, [e for e in new if streams.category(e.stream_id) in projection.categories]


@contextlib.asynccontextmanager
async def _locked(
    conn: asyncpg.Connection, projections: Sequence[Projection]
) -> AsyncIterator[None]:
    """A transaction holding the projections' locks (in one order, so two holders never wait on
    each other), begun in one round trip (asyncpg's `transaction()` sends BEGIN on its own):
    the live projector runs one per batch."""
    locks = ", ".join(f"pg_advisory_xact_lock({key})" for key in sorted(map(lock_key, projections)))
    try:
        await conn.execute(f"BEGIN; SELECT {locks}")
        yield
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def _read_checkpoints(conn: asyncpg.Connection, schemas: Sequence[str]) -> list[Position]:
    """Every schema's checkpoint in one round trip, in the order of `schemas`."""
    rows = await conn.fetch(
        " UNION ALL ".join(
            f"SELECT {n} AS n, tx_id::text::bigint AS tx_id, position FROM {schema}.checkpoint"
            for n, schema in enumerate(schemas)
        )
    )
    found = {row["n"]: Position(row["tx_id"], row["position"]) for row in rows}
    return [found.get(n, START) for n in range(len(schemas))]


def _move_checkpoints_sql(schemas: Sequence[str]) -> str:
    """Every schema's checkpoint moved ($1: the stream sequence; per schema a transaction id and
    a position) and the gateways told on the channels in the last parameter (at commit)."""
    moves = ", ".join(
        f"m{n} AS (UPDATE {schema}.checkpoint SET tx_id = ${2 * n + 2}::text::xid8,"
        f" position = ${2 * n + 3}, stream_seq = greatest(stream_seq, coalesce($1, stream_seq))"
        " RETURNING 1)"
        for n, schema in enumerate(schemas)
    )
    told = 2 * len(schemas) + 2
    return f"WITH {moves} SELECT pg_notify(c, '') FROM unnest(${told}::text[]) AS c"


async def apply_together(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    events: Sequence[RecordedEvent],
    stream_seq: int | None = None,
) -> int:
    """The live projector's unit of work for the read models it keeps: their rows and
    checkpoints commit together or not at all, and gateways hear of a read model's change when
    it commits. Four round trips and the read models' own statements, however many read models
    and events: one consumer and one transaction for all instead of one each. Each read model
    skips what its checkpoint says it has, applies the events of its categories and moves its
    checkpoint to the batch's last event. Returns how many events were new, summed over the
    read models."""
    schemas = [live_schema(p) for p in projections]
    async with _locked(conn, projections):
        checkpoints = await _read_checkpoints(conn, schemas)
        moved: list[object] = []
        channels = []
        applied = 0
        for projection, schema, checkpoint in zip(projections, schemas, checkpoints, strict=True):
            new, mine = _unapplied(projection, events, checkpoint)
            if mine:
                await _apply(conn, projection, schema, mine)
                if not passes_by(projection, mine):
                    channels.append(read_model_channel(projection.name))
            last = new[-1].global_position if new else checkpoint
            moved += [str(last.tx_id), last.position]
            applied += len(new)
        await conn.execute(_move_checkpoints_sql(schemas), stream_seq, *moved, channels)
    return applied


async def apply_batch(
    conn: asyncpg.Connection,
    projection: Projection,
    events: Sequence[RecordedEvent],
    stream_seq: int | None = None,
) -> int:
    """One read model's live unit of work (`apply_together` of one)."""
    return await apply_together(conn, [projection], events, stream_seq)
