"""Ids from the reserve are unique and increasing, and the next block comes before it is needed."""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg

from services.usecases.catalog_commands import IdReserve
from tests.integration.counting_pool import CountingPool


def _reserve(pool: asyncpg.Pool, block: int) -> tuple[IdReserve, CountingPool]:
    counting = CountingPool(pool)
    return IdReserve(cast(asyncpg.Pool, counting), block=block), counting


async def test_concurrent_takes_get_unique_increasing_ids(pool: asyncpg.Pool) -> None:
    reserve, _ = _reserve(pool, block=10)
    taken = await asyncio.gather(*(reserve.take(3) for _ in range(50)))
    assert all(len(ids) == 3 for ids in taken)
    in_order = [i for ids in sorted(taken) for i in ids]
    assert in_order == sorted(set(in_order))
    assert len(in_order) == 150


async def test_next_block_is_fetched_in_the_background(pool: asyncpg.Pool) -> None:
    reserve, counting = _reserve(pool, block=10)
    first = await reserve.take(6)
    assert counting.reads == 1
    for _ in range(250):  # the refill runs without anyone taking
        if len(reserve._ids) > 4:
            break
        await asyncio.sleep(0.02)
    assert counting.reads == 2
    assert len(reserve._ids) == 14
    rest = await reserve.take(8)
    assert counting.reads == 2
    assert first + rest == sorted(set(first + rest))


async def test_take_more_than_a_block(pool: asyncpg.Pool) -> None:
    reserve, _ = _reserve(pool, block=10)
    ids = await reserve.take(25)
    more = await reserve.take(25)
    assert len(ids) == len(more) == 25
    assert ids + more == sorted(set(ids + more))
