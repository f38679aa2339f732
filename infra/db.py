"""PostgreSQL access: the connection pool and the versioned migrations applied at start."""

from __future__ import annotations

import asyncio
import re
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_MIGRATIONS_LOCK = 7_301_001
# How long a pool being closed waits for its connections to come back before it closes them.
POOL_CLOSE_SECONDS = 5.0


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Releasing a connection costs no round trip: asyncpg still rolls back a transaction left
    open, and nothing here leaves session state behind (advisory locks are transaction-scoped;
    whoever LISTENs or sets a session variable on a pooled connection undoes it before release).
    The default reset would add a query to every acquire, doubling the cost of a cheap read."""


CONNECT_SECONDS = 10.0


async def create_pool(database_url: str, size: int = 10, *, opened: int = 1) -> asyncpg.Pool:
    """A pool whose connections are ready for the event store (no per-query set-up); `opened`
    of them are connected at once, the others when first needed."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=opened,
        max_size=size,
        reset=_keep_session,
        # A server that takes the connection and never answers is out of reach too: a command
        # says so in 10 s, a process waits it out as any outage (asyncpg's default is 60 s).
        timeout=CONNECT_SECONDS,
        command_timeout=60,
        server_settings={
            "application_name": "linjerum",
        },
    )
    assert pool is not None
    return pool


def connection_gone(conn: asyncpg.Connection) -> bool:
    """Closed, or taken back by its pool when its server went away (asyncpg then detaches the
    connection a caller still holds, and asking it anything raises InterfaceError)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool, waiting POOL_CLOSE_SECONDS at most: asyncpg's close() waits for every
    connection to be released, however long, so one still taken by a task that did not end
    kept a process from stopping. Then its connections are closed under whoever holds them
    (asyncpg terminates a pool whose close() is interrupted)."""
    try:
        async with asyncio.timeout(POOL_CLOSE_SECONDS):
            await pool.close()
    except TimeoutError:
        log.warning("database_pool_terminated", waited_seconds=POOL_CLOSE_SECONDS)


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("infra.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply each migration not yet recorded, each in its own transaction; safe to run from
    several processes at once (an advisory lock makes the others wait, then find nothing to do)."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATIONS_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
            log.info("migration_applied", migration=name)
    return applied
