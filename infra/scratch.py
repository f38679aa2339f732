"""A database and a JetStream stream of one's own on shared servers, removed afterwards: what a
test run or a benchmark works in, so that runs never see each other's data."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import nats

from infra.settings import Settings


def database_name(settings: Settings) -> str:
    """The database `settings.database_url` names (the PostgreSQL backends' titles show it)."""
    return settings.database_url.partition("?")[0].rpartition("/")[2]


def _renamed(database_url: str, name: str) -> str:
    """`database_url` naming database `name`, with its parameters (a socket folder as `host`,
    `sslmode`) kept."""
    address, query, params = database_url.partition("?")
    return f"{address.rpartition('/')[0]}/{name}{query}{params}"


@contextlib.asynccontextmanager
async def scratch(settings: Settings, name: str, *, stream: bool = True) -> AsyncIterator[Settings]:
    """`settings` moved to a new database `name` on the same server and to a stream and subjects
    named after it; the database, and the stream unless `stream` is false (no NATS to ask), are
    removed on the way out, whatever happened inside."""
    admin = await asyncpg.connect(settings.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    own = dataclasses.replace(
        settings,
        database_url=_renamed(settings.database_url, name),
        nats_stream=name.upper(),
        # One token: a scratch named after another (`<db>_catalog`) must not nest its subjects
        # under the other's, which JetStream refuses as overlapping streams.
        subject_prefix=name.replace("_", "-"),
    )
    try:
        yield own
    finally:
        if stream:
            with contextlib.suppress(Exception):
                nc = await nats.connect(own.nats_url)
                js = nc.jetstream()
                with contextlib.suppress(Exception):
                    await js.delete_stream(own.nats_stream)
                with contextlib.suppress(Exception):
                    await js.delete_key_value(own.desk_owners_bucket)
                await nc.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
