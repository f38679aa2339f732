"""What every read model shares: its own schema, a checkpoint applied in the same transaction
as the rows, and an advisory lock that keeps a live projector and a rebuild's swap apart."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import ClassVar, Protocol

import asyncpg

from domain import streams
from infra.changes import announce, read_model_channel
from infra.eventstore import START, Position, RecordedEvent


class Projection(Protocol):
    """A read model: DDL for its tables (with `{schema}` placeholders) and a pure mapping from
    one event to SQL run on the given connection, inside the framework's transaction."""

    name: ClassVar[str]
    categories: ClassVar[tuple[str, ...]]
    tables_sql: ClassVar[str]

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None: ...


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


async def apply_events(
    conn: asyncpg.Connection,
    projection: Projection,
    schema: str,
    events: Sequence[RecordedEvent],
    stream_seq: int | None = None,
) -> int:
    """Apply the events not yet applied and move the checkpoint; call inside a transaction that
    already holds the projection's lock. Returns how many were new. `stream_seq` is the JetStream
    sequence of the last message of a live batch (None when replaying from the event store).
    Events of other categories only move the checkpoint: a NATS server older than 2.10 ignores
    a consumer's list of filter subjects and delivers everything."""
    checkpoint = await read_checkpoint(conn, schema)
    applied = 0
    for event in events:
        if event.global_position <= checkpoint:
            continue
        if streams.category(event.stream_id) in projection.categories:
            await projection.apply(conn, schema, event)
        checkpoint = event.global_position
        applied += 1
    if applied or stream_seq is not None:
        await conn.execute(
            f"UPDATE {schema}.checkpoint SET tx_id = $1::text::xid8, position = $2,"
            " stream_seq = greatest(stream_seq, coalesce($3, stream_seq))",
            str(checkpoint.tx_id),
            checkpoint.position,
            stream_seq,
        )
    return applied


async def apply_batch(
    conn: asyncpg.Connection,
    projection: Projection,
    events: Sequence[RecordedEvent],
    stream_seq: int | None = None,
) -> int:
    """The live projector's unit of work: rows and checkpoint commit together or not at all, and
    gateways hear of the change when it commits."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(projection))
        applied = await apply_events(conn, projection, live_schema(projection), events, stream_seq)
        if applied:
            await announce(conn, read_model_channel(projection.name))
        return applied
