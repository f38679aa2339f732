"""Batched appends are each stored as if alone: own versions, own conflicts, in fewer commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest

from domain.purchasing import PaymentIntentCreated
from infra.append_batcher import AppendBatcher
from infra.eventstore import NO_STREAM, ConcurrencyError, Metadata, PendingAppend, read_stream

META = Metadata(actor="test-batcher")


def _stream() -> str:
    return f"purchase-{uuid.uuid4().hex}"


def _intent(n: int) -> PaymentIntentCreated:
    return PaymentIntentCreated(token=f"tok-{n}", intent_id=f"pi_{n}", client_secret=f"cs_{n}")


@pytest.fixture
async def batcher(pool: asyncpg.Pool) -> AsyncIterator[AppendBatcher]:
    batcher = AppendBatcher(pool)
    yield batcher
    await batcher.close()


async def _transactions(pool: asyncpg.Pool, streams: list[str]) -> int:
    return await pool.fetchval(
        "SELECT count(DISTINCT tx_id::text) FROM events WHERE stream_id = ANY($1::text[])", streams
    )


async def test_concurrent_appends_share_transactions(
    pool: asyncpg.Pool, batcher: AppendBatcher
) -> None:
    streams = [_stream() for _ in range(50)]
    results = await asyncio.gather(
        *(
            batcher.append([PendingAppend(s, NO_STREAM, [_intent(i)])], META)
            for i, s in enumerate(streams)
        )
    )
    assert results == [{s: 1} for s in streams]
    for i, s in enumerate(streams):
        [stored] = await read_stream(pool, s)
        assert stored.event() == _intent(i)
        assert stored.metadata == META
    assert await _transactions(pool, streams) < len(streams)


async def test_a_stale_caller_fails_alone(pool: asyncpg.Pool, batcher: AppendBatcher) -> None:
    stale = _stream()
    await batcher.append([PendingAppend(stale, NO_STREAM, [_intent(0)])], META)
    streams = [_stream() for _ in range(10)]
    streams.insert(5, stale)
    results = await asyncio.gather(
        *(
            batcher.append([PendingAppend(s, NO_STREAM, [_intent(i)])], META)
            for i, s in enumerate(streams)
        ),
        return_exceptions=True,
    )
    for s, result in zip(streams, results, strict=True):
        if s == stale:
            assert isinstance(result, ConcurrencyError)
            assert result.stream_id == stale
        else:
            assert result == {s: 1}
            assert len(await read_stream(pool, s)) == 1
    assert [e.event() for e in await read_stream(pool, stale)] == [_intent(0)]
    others = [s for s in streams if s != stale]
    assert await _transactions(pool, others) < len(others)


async def test_a_caller_with_one_moved_stream_of_two_stores_neither(
    pool: asyncpg.Pool, batcher: AppendBatcher
) -> None:
    """A caller appending to two streams, one of them moved, stores neither; the callers
    batched with it are stored by the same one transaction all the same."""
    moved, beside = _stream(), _stream()
    await batcher.append([PendingAppend(moved, NO_STREAM, [_intent(0)])], META)
    others = [_stream() for _ in range(6)]
    two_streams = [
        PendingAppend(beside, NO_STREAM, [_intent(1)]),
        PendingAppend(moved, NO_STREAM, [_intent(2)]),
    ]
    results = await asyncio.gather(
        batcher.append(two_streams, META),
        *(batcher.append([PendingAppend(s, NO_STREAM, [_intent(3)])], META) for s in others),
        return_exceptions=True,
    )
    refused, *stored = results
    assert isinstance(refused, ConcurrencyError)
    assert refused.stream_id == moved
    assert stored == [{s: 1} for s in others]
    assert await read_stream(pool, beside) == []
    assert [e.event() for e in await read_stream(pool, moved)] == [_intent(0)]
    assert await _transactions(pool, others) == 1


async def test_two_appends_to_one_stream_are_stored_in_order(
    pool: asyncpg.Pool, batcher: AppendBatcher
) -> None:
    s = _stream()
    first, second = await asyncio.gather(
        batcher.append([PendingAppend(s, NO_STREAM, [_intent(1)])], META),
        batcher.append([PendingAppend(s, 1, [_intent(2)])], META),
    )
    assert (first, second) == ({s: 1}, {s: 2})
    stored = await read_stream(pool, s)
    assert [e.event() for e in stored] == [_intent(1), _intent(2)]
    assert stored[0].tx_id != stored[1].tx_id


async def test_a_batch_kept_waiting_holds_back_only_its_streams(
    pool: asyncpg.Pool, batcher: AppendBatcher
) -> None:
    """While one batch waits for a stream (here, its lock held by another writer), appends to
    other streams are stored by a batch of their own; the stream's next append waits for its
    turn and is stored after it."""
    held, other = _stream(), _stream()
    async with pool.acquire() as writer:
        tx = writer.transaction()
        await tx.start()
        await writer.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", held)
        first = asyncio.create_task(
            batcher.append([PendingAppend(held, NO_STREAM, [_intent(1)])], META)
        )
        async with asyncio.timeout(10):
            while not await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                " AND datname = current_database()"
            ):
                await asyncio.sleep(0.01)
        second = asyncio.create_task(batcher.append([PendingAppend(held, 1, [_intent(2)])], META))
        async with asyncio.timeout(10):
            assert await batcher.append([PendingAppend(other, NO_STREAM, [_intent(3)])], META) == {
                other: 1
            }
        assert not first.done() and not second.done()
        await tx.rollback()
    assert (await first, await second) == ({held: 1}, {held: 2})
    assert [e.event() for e in await read_stream(pool, held)] == [_intent(1), _intent(2)]


class _Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was touched: {name}")


async def test_empty_append_touches_nothing() -> None:
    batcher = AppendBatcher(cast(asyncpg.Pool, _Untouchable()))
    assert await batcher.append([], META) == {}
    await batcher.close()
