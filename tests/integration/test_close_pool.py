"""A process stops even when a database connection was never given back: asyncpg's close()
waits for every connection to be released, however long."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra import db
from infra.db import close_pool, create_pool
from infra.settings import Settings


async def test_a_pool_with_a_connection_still_taken_is_closed_after_a_while(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "POOL_CLOSE_SECONDS", 0.3)
    pool = await create_pool(settings.database_url, 2)
    taken = await pool.acquire()  # by a task that never ends, say
    async with asyncio.timeout(10):
        await close_pool(pool)
    assert pool.is_closing()
    with pytest.raises(asyncpg.InterfaceError):
        await taken.fetchval("SELECT 1")


async def test_a_pool_whose_connections_are_back_closes_at_once(settings: Settings) -> None:
    pool = await create_pool(settings.database_url, 2)
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    async with asyncio.timeout(db.POOL_CLOSE_SECONDS / 2):
        await close_pool(pool)
    assert pool.is_closing()
