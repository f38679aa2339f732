"""A real pool that counts the queries sent through it (every query still runs in PostgreSQL)."""

from __future__ import annotations

from typing import Any

import asyncpg


class CountingPool:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.reads = 0

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.reads += 1
        return await self.pool.fetch(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.reads += 1
        return await self.pool.fetchval(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        self.reads += 1
        return await self.pool.fetchrow(query, *args)
