"""Reads asked for together: one fetch answers them all, and a fetch that fails fails each of
them once, leaving no failure unclaimed (asyncio reports those as never retrieved)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping

import pytest

from infra.coalesce import Coalesced


async def test_keys_asked_together_share_one_fetch() -> None:
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> Mapping[str, int]:
        fetched.append(keys)
        return {key: len(key) for key in keys if key != "gone"}

    reads = Coalesced(fetch, -1)
    first = asyncio.ensure_future(reads.get_many(["a", "bb", "gone"]))
    second = asyncio.ensure_future(reads.get("ccc"))
    assert await first == [1, 2, -1] and await second == 3
    assert fetched == [["a", "bb", "gone", "ccc"]]


async def test_a_failed_fetch_fails_every_key_and_leaves_nothing_unclaimed() -> None:
    async def fetch(keys: list[str]) -> Mapping[str, int]:
        raise ConnectionResetError("the database went away")

    unclaimed: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unclaimed.append(context))
    try:
        reads = Coalesced(fetch, -1)
        with pytest.raises(ConnectionResetError):
            await reads.get_many(["a", "b", "c"])
        await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert unclaimed == []
