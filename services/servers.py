"""The servers a process works on: the configured PostgreSQL and NATS, else the embedded ones of
the data folder, and a pool on the migrated database."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import asyncpg

from infra.db import close_pool, create_pool, migrate
from infra.embedded import embedded_servers
from infra.settings import Settings
from infra.supervise import OUTAGES, dependency_of
from projections.registry import ensure_read_models

# Pauses between attempts to reach PostgreSQL at a process's start: doubled up to the last.
REACH_FIRST_PAUSE = 0.5
REACH_LAST_PAUSE = 5.0


@contextlib.asynccontextmanager
async def connected(settings: Settings, *, nats: bool = True) -> AsyncIterator[Settings]:
    """Settings whose URLs reach real servers: the configured ones, else the embedded ones of
    the data folder (reused when a `linjerum run` already has them up, started otherwise)."""
    need_postgres = not settings.database_url
    need_nats = nats and not settings.nats_url
    if not (need_postgres or need_nats):
        yield settings
        return
    async with embedded_servers(settings.data_dir, postgres=need_postgres, nats=need_nats) as found:
        yield dataclasses.replace(
            settings,
            database_url=settings.database_url or found.database_url,
            nats_url=settings.nats_url or found.nats_url,
        )


@contextlib.asynccontextmanager
async def database(settings: Settings, *, waiting: bool = False) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the migrated schema. `waiting`: a long-running process started while
    PostgreSQL cannot be reached (stopped, restarting, still recovering) waits for it, one
    warning at the start of the wait and one at its end, rather than exiting: a child of
    `linjerum run` killed during an outage would otherwise fail each restart until the run gave
    up on it. A command an operator types fails at once instead."""
    pool = await (_reached(settings) if waiting else _opened(settings))
    try:
        yield pool
    finally:
        await close_pool(pool)


async def _opened(settings: Settings) -> asyncpg.Pool:
    pool = await create_pool(settings.database_url, settings.db_pool_size)
    try:
        await migrate(pool)
        await ensure_read_models(pool)
    except BaseException:
        pool.terminate()
        raise
    return pool


async def _reached(settings: Settings) -> asyncpg.Pool:
    pause = REACH_FIRST_PAUSE
    while True:
        try:
            pool = await _opened(settings)
        except Exception as exc:
            if dependency_of(exc) != "postgresql":
                raise
            OUTAGES.down("postgresql", exc, at="start")
            await asyncio.sleep(pause)
            pause = min(2 * pause, REACH_LAST_PAUSE)
            continue
        OUTAGES.up("postgresql")
        return pool
