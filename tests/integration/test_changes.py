"""The change feed and the memoized answers built on it, against the real database: an answer is
reused until a committed change is announced, a rolled-back change announces nothing, and while
the listening connection is lost nothing is served from memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import structlog.testing

from infra.changes import API_KEYS, APPLICATION_NAME, ChangeFeed, announce, read_model_channel
from services.api.memo import Memo

READ_MODELS = read_model_channel("availability")
OTHER = read_model_channel("tickets")


@pytest.fixture
async def feed(pool: asyncpg.Pool) -> AsyncIterator[ChangeFeed]:
    changes = ChangeFeed(pool, (READ_MODELS, OTHER, API_KEYS))
    changes.start()
    await _until(lambda: changes.generation(READ_MODELS) is not None)
    yield changes
    await changes.stop()


async def _until(condition, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


class Counted:
    """A build that says how often it ran, so a test sees what came from memory."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        await asyncio.sleep(0.02)
        return self.calls


async def test_answers_are_reused_until_a_committed_change_is_announced(
    pool: asyncpg.Pool, feed: ChangeFeed
) -> None:
    memo: Memo[int] = Memo(feed, (READ_MODELS,), ttl=60)
    build = Counted()
    shared = await asyncio.gather(*(memo.get("availability", build) for _ in range(20)))
    assert shared == [1] * 20 and build.calls == 1
    assert await memo.get("availability", build) == 1

    before = feed.generation(READ_MODELS)
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await announce(conn, READ_MODELS)
                raise RuntimeError("rolled back")
    await asyncio.sleep(0.2)
    assert feed.generation(READ_MODELS) == before
    assert await memo.get("availability", build) == 1

    other = feed.generation(OTHER)
    async with pool.acquire() as conn, conn.transaction():
        await announce(conn, OTHER)
    await _until(lambda: feed.generation(OTHER) != other)
    assert await memo.get("availability", build) == 1, "another read model's change"

    async with pool.acquire() as conn, conn.transaction():
        await announce(conn, READ_MODELS)
    await _until(lambda: feed.generation(READ_MODELS) != before)
    assert await memo.get("availability", build) == 2
    assert feed.generation(API_KEYS) is not None


async def test_an_answer_expires_after_its_ttl(feed: ChangeFeed) -> None:
    memo: Memo[int] = Memo(feed, (READ_MODELS,), ttl=0.1)
    build = Counted()
    assert await memo.get("status", build) == 1
    await asyncio.sleep(0.15)
    assert await memo.get("status", build) == 2


async def test_a_change_during_a_build_is_not_hidden_by_it(
    pool: asyncpg.Pool, feed: ChangeFeed
) -> None:
    memo: Memo[int] = Memo(feed, (READ_MODELS,), ttl=60)
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def slow() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return calls

    first = asyncio.create_task(memo.get("plan", slow))
    await started.wait()
    generation = feed.generation(READ_MODELS)
    async with pool.acquire() as conn, conn.transaction():
        await announce(conn, READ_MODELS)
    await _until(lambda: feed.generation(READ_MODELS) != generation)
    release.set()
    assert await first == 1
    assert await memo.get("plan", slow) == 2


async def test_nothing_is_served_from_memory_while_the_listener_is_lost(
    pool: asyncpg.Pool, feed: ChangeFeed
) -> None:
    memo: Memo[int] = Memo(feed, (READ_MODELS,), ttl=60)
    build = Counted()
    assert await memo.get("event", build) == 1
    with structlog.testing.capture_logs() as logged:
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        assert killed >= 1
        await _until(lambda: feed.generation(READ_MODELS) is None)
        assert await memo.get("event", build) == 2
        assert await memo.get("event", build) == 3
        await _until(lambda: feed.generation(READ_MODELS) is not None)
    # The pool takes a connection whose server went away back on its own: that is the feed's
    # lost connection, not a misuse of one (an InterfaceError) logged as the outage's cause.
    assert not [entry for entry in logged if "InterfaceError" in str(entry)], logged
    assert await memo.get("event", build) == 4
    assert await memo.get("event", build) == 4
