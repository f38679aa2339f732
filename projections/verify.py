"""Check a live read model against a replay of the event store without replacing it: the
replay goes into a scratch schema, catches up to the live checkpoint under the projection's
lock, and every table is compared row by row before the scratch schema is dropped."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import asyncpg
import msgspec

from projections.framework import Projection, live_schema, lock_key
from projections.rebuild import (
    Replayed,
    catch_up_to_live,
    fresh_replay,
    no_progress,
    taking_turns,
)

Row = dict[str, Any]


class Difference(msgspec.Struct):
    """One row that the live table and the replay disagree on; None where a side lacks it."""

    table: str
    key: Row
    live: Row | None
    rebuilt: Row | None


async def verify(
    pool: asyncpg.Pool, projection: Projection, on_replayed: Replayed = no_progress
) -> list[Difference]:
    live = live_schema(projection)
    scratch = f"{live}__verify"
    async with pool.acquire() as conn, taking_turns(conn, projection):
        try:
            await fresh_replay(conn, projection, scratch, on_replayed)
            async with conn.transaction():
                # Held until the comparison ends: the live tables cannot move past the replay.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(projection))
                await catch_up_to_live(conn, projection, scratch, on_replayed)
                differences = []
                for table in await tables(conn, scratch):
                    differences += await compare(conn, table, live, scratch)
                return differences
        finally:
            await conn.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")


async def tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Every table the projection creates; the checkpoint differs by design (stream_seq)."""
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = $1 AND table_type = 'BASE TABLE' AND table_name <> 'checkpoint'"
        " ORDER BY table_name",
        schema,
    )
    return [row["table_name"] for row in rows]


async def _primary_key(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = format('%I.%I', $1::text, $2::text)::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)",
        schema,
        table,
    )
    return [row["attname"] for row in rows]


async def _rows(conn: asyncpg.Connection, schema: str, table: str) -> list[Row]:
    records = await conn.fetch(f'SELECT to_jsonb(t)::text AS row FROM {schema}."{table}" t')
    return [json.loads(record["row"]) for record in records]


async def compare(
    conn: asyncpg.Connection, table: str, live: str, scratch: str
) -> list[Difference]:
    """Rows compare as multisets, so tables without a primary key compare too; the rows that
    differ pair up by primary key (by every column when there is none)."""
    key = await _primary_key(conn, scratch, table)
    live_rows = Counter(json.dumps(r, sort_keys=True) for r in await _rows(conn, live, table))
    new_rows = Counter(json.dumps(r, sort_keys=True) for r in await _rows(conn, scratch, table))
    only_live = [json.loads(r) for r in (live_rows - new_rows).elements()]
    only_new = [json.loads(r) for r in (new_rows - live_rows).elements()]

    def key_of(row: Row) -> str:
        return json.dumps({c: row[c] for c in key} if key else row, sort_keys=True)

    pairs: dict[str, list[Row | None]] = {}
    for row in only_live:
        pairs.setdefault(key_of(row), [None, None])[0] = row
    for row in only_new:
        pairs.setdefault(key_of(row), [None, None])[1] = row
    return [
        Difference(table=table, key=json.loads(k), live=old, rebuilt=new)
        for k, (old, new) in sorted(pairs.items())
    ]
