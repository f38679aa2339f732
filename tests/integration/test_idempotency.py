"""Idempotency keys held by the gateway process that claimed them: while it lives, a retry is
told the first request still runs; once it is killed (it stops renewing its life), the next
retry takes the key over at once with the value the first request drew; an answer the database
could not take as the request ended is stored once the database is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from infra import idempotency
from infra.db import create_pool
from infra.settings import Settings
from tests.servers import CuttableProxy, through

API_KEY = 1
BODY = idempotency.request_hash("POST", "/api/v1/purchases", b'{"quantities": {"1": 1}}')


@pytest.fixture
async def claimant(pool: asyncpg.Pool) -> AsyncIterator[idempotency.Claimant]:
    alive = idempotency.Claimant(pool)
    await alive.start()
    yield alive
    await alive.stop()


async def _claim(pool: asyncpg.Pool, who: str, key: str, body: bytes = BODY):
    return await idempotency.claim(pool, who, API_KEY, key, body)


async def test_a_killed_claimants_key_is_taken_over_with_its_reserved_value(
    pool: asyncpg.Pool, claimant: idempotency.Claimant
) -> None:
    key = uuid.uuid4().hex
    first = await _claim(pool, "killed", key)  # a process that never renews: killed
    assert isinstance(first, idempotency.Claim) and not first.retaken
    with pytest.raises(idempotency.KeyReused):
        await _claim(pool, claimant.name, key, body=b"another request")
    retry = await _claim(pool, claimant.name, key)
    assert retry == idempotency.Claim(first.reserved, retaken=True)
    with pytest.raises(idempotency.StillRunning):
        await _claim(pool, "killed", key)
    await idempotency.finish(pool, "killed", API_KEY, key, 201, b"{}")  # too late: not its own
    with pytest.raises(idempotency.StillRunning):
        await _claim(pool, "killed", key)
    await claimant.finish(API_KEY, key, 201, b'{"ok": true}')
    assert await _claim(pool, "killed", key) == idempotency.Replay(201, b'{"ok": true}')


async def test_a_stopped_claimants_keys_are_taken_over(pool: asyncpg.Pool) -> None:
    key = uuid.uuid4().hex
    stopped = idempotency.Claimant(pool)
    await stopped.start()
    claimed = await _claim(pool, stopped.name, key)
    with pytest.raises(idempotency.StillRunning):
        await _claim(pool, "another", key)
    await stopped.stop()
    assert await _claim(pool, "another", key) == idempotency.Claim(claimed.reserved, True)


@pytest.fixture
async def cut_off(settings: Settings) -> AsyncIterator[tuple[CuttableProxy, asyncpg.Pool]]:
    """A pool whose connections go through a proxy that can cut the database off."""
    url = urlsplit(settings.database_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.restore()
    pool = await create_pool(through(settings.database_url, proxy.port), 2)
    yield proxy, pool
    pool.terminate()
    await proxy.cut()


async def test_an_answer_the_database_missed_is_stored_once_it_is_back(
    pool: asyncpg.Pool, cut_off: tuple[CuttableProxy, asyncpg.Pool]
) -> None:
    proxy, through = cut_off
    claimant = idempotency.Claimant(through)
    await claimant.start()
    try:
        key = uuid.uuid4().hex
        assert isinstance(await _claim(through, claimant.name, key), idempotency.Claim)
        await proxy.cut()
        await claimant.finish(API_KEY, key, 201, b'{"paid": false}')
        with pytest.raises(idempotency.StillRunning):
            await _claim(pool, "another", key)
        await proxy.restore()
        for _ in range(50):
            await asyncio.sleep(0.1)
            try:
                replayed = await _claim(pool, "another", key)
                break
            except idempotency.StillRunning:
                continue
        assert replayed == idempotency.Replay(201, b'{"paid": false}')
    finally:
        await claimant.stop()
