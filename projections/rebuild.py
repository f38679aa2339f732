"""Rebuild a read model from the event store into fresh tables and swap them in atomically,
while the live tables keep serving reads and the live projector keeps applying."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Callable

import asyncpg
import structlog

from infra.changes import announce, read_model_channel
from infra.eventstore import Position
from infra.global_order import head, read_all, wait_until_settled
from projections.framework import (
    Projection,
    apply_events,
    create_schema,
    live_schema,
    lock_key,
    read_checkpoint,
    read_stream_seq,
)

log = structlog.get_logger(__name__)

BATCH = 2000

Replayed = Callable[[int], object]
"""Told how many more events a replay applied, e.g. a progress bar's update."""


async def events_to_replay(conn: asyncpg.Connection | asyncpg.Pool, projection: Projection) -> int:
    """A replay's total for progress reporting: the events of the projection's categories."""
    return await conn.fetchval(
        "SELECT count(*) FROM events WHERE split_part(stream_id, '-', 1) = ANY($1)",
        list(projection.categories),
    )


async def fresh_replay(
    conn: asyncpg.Connection,
    projection: Projection,
    schema: str,
    on_replayed: Replayed,
    up_to: Position | None = None,
) -> int:
    """Replay into a new schema in short transactions, so the relay's horizon is never held
    back for long: every event committed before the replay began (waiting for transactions still
    in flight up to it), or only those up to `up_to`, a settled position. Returns the number of
    events replayed."""
    if up_to is None:
        await wait_until_settled(conn, await head(conn))
    async with conn.transaction():
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await create_schema(conn, projection, schema)
    replayed = 0
    while True:
        async with conn.transaction():
            after = await read_checkpoint(conn, schema)
            events = await read_all(conn, after, BATCH, projection.categories, up_to=up_to)
            applied = await apply_events(conn, projection, schema, events)
        replayed += applied
        on_replayed(applied)
        if len(events) < BATCH:
            return replayed
        log.info("rebuild_progress", projection=projection.name, replayed=replayed)


async def catch_up_to_live(
    conn: asyncpg.Connection, projection: Projection, schema: str, on_replayed: Replayed
) -> int:
    """Bring the schema to exactly the live checkpoint; call inside a transaction holding the
    projection's lock, where everything the live projector applied is settled."""
    target = await read_checkpoint(conn, live_schema(projection))
    replayed = 0
    while (after := await read_checkpoint(conn, schema)) < target:
        events = await read_all(conn, after, BATCH, projection.categories, up_to=target)
        if not events:
            break
        applied = await apply_events(conn, projection, schema, events)
        replayed += applied
        on_replayed(applied)
    return replayed


def no_progress(applied: int) -> None:
    return None


@contextlib.asynccontextmanager
async def taking_turns(conn: asyncpg.Connection, projection: Projection) -> AsyncIterator[None]:
    """Rebuilds, verifies and redrives of one read model, from any process, one after another:
    each builds in scratch schemas of fixed names, which a second one started meanwhile dropped
    under the first (two `rebuild --all` at once ended one of them in a traceback)."""
    key = zlib.crc32(f"offline:{projection.name}".encode())
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        yield
    finally:
        # A connection gone with its server has let go of the lock already.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def rebuild(
    pool: asyncpg.Pool, projection: Projection, on_replayed: Replayed = no_progress
) -> int:
    """Returns the number of events replayed. Readers see the old rows until the swap commits,
    then the new ones: never an empty or half-built model."""
    live = live_schema(projection)
    build = f"{live}__build"
    async with pool.acquire() as conn, taking_turns(conn, projection):
        replayed = await fresh_replay(conn, projection, build, on_replayed)
        async with conn.transaction():
            # The live projector waits here; whatever it applied already is settled, so the new
            # tables catch up to exactly its checkpoint before taking over.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(projection))
            live_exists = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", live
            )
            if live_exists:
                target = await read_checkpoint(conn, live)
                replayed += await catch_up_to_live(conn, projection, build, on_replayed)
                # Resume the live consumer where the old tables left off; whatever the new tables
                # hold beyond that is skipped by position when it is delivered again.
                caught_up = max(await read_checkpoint(conn, build), target)
                await conn.execute(
                    f"UPDATE {build}.checkpoint"
                    " SET tx_id = $1::text::xid8, position = $2, stream_seq = $3",
                    str(caught_up.tx_id),
                    caught_up.position,
                    await read_stream_seq(conn, live),
                )
                await conn.execute(f"ALTER SCHEMA {live} RENAME TO {live}__old")
            await conn.execute(f"ALTER SCHEMA {build} RENAME TO {live}")
            if live_exists:
                await conn.execute(f"DROP SCHEMA {live}__old CASCADE")
            await announce(conn, read_model_channel(projection.name))
    log.info("rebuild_swapped", projection=projection.name, replayed=replayed)
    return replayed
