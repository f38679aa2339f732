"""Invariants 3 and 5: a projector applies each event once in effect across kills and restarts,
and a rebuild from the event store gives the same rows, swapped in without a gap for readers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid

import asyncpg
import nats
import pytest

from infra.bus import ensure_stream
from infra.eventstore import ANY_VERSION, Metadata, PendingAppend, append
from infra.settings import Settings
from projections.framework import live_schema
from projections.rebuild import rebuild
from services.workers.projector import Projector
from services.workers.relay import Relay
from tests.integration.sample_projection import TallyCounted, TallyProjection

META = Metadata(actor="test")
TABLE = f"{live_schema(TallyProjection())}.tallies"


@pytest.fixture
async def js(settings: Settings):
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    yield js
    await nc.close()


@contextlib.asynccontextmanager
async def running(coro):
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _expected(pool: asyncpg.Pool) -> dict[str, int]:
    """The truth, straight from the event store."""
    rows = await pool.fetch(
        "SELECT stream_id, sum((data->>'amount')::bigint) AS total FROM events"
        " WHERE stream_id LIKE 'tally-%' GROUP BY stream_id"
    )
    return {r["stream_id"]: r["total"] for r in rows}


async def _rows(pool: asyncpg.Pool) -> list[tuple]:
    with contextlib.suppress(asyncpg.UndefinedTableError):
        return [tuple(r) for r in await pool.fetch(f"SELECT * FROM {TABLE} ORDER BY stream_id")]
    return []


async def _wait_for(predicate, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def _write(pool: asyncpg.Pool, run: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        stream = f"tally-{run}{rng.randrange(8)}"
        event = TallyCounted(amount=rng.randrange(1, 100))
        await append(pool, [PendingAppend(stream, ANY_VERSION, [event])], META)


async def _matches_store(pool: asyncpg.Pool) -> bool:
    totals = {row[0]: row[1] for row in await _rows(pool)}
    return totals == await _expected(pool)


async def test_projector_killed_mid_stream_ends_like_a_rebuild(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    async with running(Relay(pool, js, settings, name=f"proj-{run}").run()):
        first = Projector(pool, js, settings, TallyProjection(), batch_size=20)
        async with running(first.run()):
            await _write(pool, run, 200, seed=1)
            await _wait_for(lambda: _applied_at_least(first, 40))
            writer = asyncio.create_task(_write(pool, run, 200, seed=4))
        # Killed mid-stream: the writer is still going, nothing of its last batch acked.
        assert not writer.done()
        second = Projector(pool, js, settings, TallyProjection(), batch_size=20)
        async with running(second.run()):
            await writer
            await _wait_for(lambda: _matches_store(pool))
            live = await _rows(pool)
    for stream_id, _total, versions in live:
        assert versions == list(range(1, len(versions) + 1)), f"{stream_id}: {versions}"
    await rebuild(pool, TallyProjection())
    assert await _rows(pool) == live


async def _applied_at_least(projector: Projector, n: int) -> bool:
    return projector.applied >= n


async def test_rebuild_while_reading_and_writing_never_serves_a_partial_model(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    async with running(Relay(pool, js, settings, name=f"rb-{run}").run()):
        projector = Projector(pool, js, settings, TallyProjection(), batch_size=50)
        async with running(projector.run()):
            await _write(pool, run, 300, seed=2)
            await _wait_for(lambda: _matches_store(pool))
            floor = len(await _rows(pool))
            seen: list[int] = []

            async def read_continuously() -> None:
                while True:
                    seen.append(len(await _rows(pool)))
                    await asyncio.sleep(0)

            async with running(read_continuously()):
                writer = asyncio.create_task(_write(pool, run + "b", 200, seed=3))
                await rebuild(pool, TallyProjection())
                await rebuild(pool, TallyProjection())
                await writer
                await _wait_for(lambda: _matches_store(pool))
            assert seen, "the reader never ran"
            assert min(seen) >= floor, "a read saw an empty or half-built model"
            live = await _rows(pool)
    await rebuild(pool, TallyProjection())
    assert await _rows(pool) == live
