"""Answers kept in one gateway process's memory until what they were built from changes.

A hot read (an on-sale's availability polled by thousands of browsers, the API key behind every
request) would otherwise cost the same database queries thousands of times a second for the same
answer. An entry is served only while the change feed's generation for its channels is the one it
was built at, and for at most `ttl` seconds (answers such as an event's status also depend on the
clock). Concurrent misses for one key share a single build."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from infra.changes import ChangeFeed

V = TypeVar("V")
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    generation: int
    version: Hashable
    expires: float


class Memo(Generic[V]):
    def __init__(self, feed: ChangeFeed, channels: tuple[str, ...], ttl: float) -> None:
        self._feed = feed
        self._channels = channels
        self._ttl = ttl
        self._entries: dict[Hashable, _Entry[V]] = {}
        self._building: dict[tuple[Hashable, int, Hashable], asyncio.Future[V]] = {}

    async def get(
        self, key: Hashable, build: Callable[[], Awaitable[V]], version: Hashable = None
    ) -> V:
        """`version`: of what else the answer is built from (a sales desk's view of the
        stream): an entry is served only at the version it was built at, too."""
        generation = self._feed.generation(*self._channels)
        if generation is None:
            return await build()
        now = time.monotonic()
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.generation == generation
            and entry.version == version
            and entry.expires > now
        ):
            return entry.value
        slot = (key, generation, version)
        building = self._building.get(slot)
        if building is None:
            # A task of its own, so a caller that goes away does not cancel the others' answer.
            building = self._building[slot] = asyncio.ensure_future(build())
            building.add_done_callback(lambda task: self._finished(key, slot, task, now))
        return await asyncio.shield(building)

    def _finished(
        self,
        key: Hashable,
        slot: tuple[Hashable, int, Hashable],
        task: asyncio.Future[V],
        started: float,
    ) -> None:
        """Kept with the generation it was built at: a value read before a change is never
        served after it (generations only grow)."""
        del self._building[slot]
        if task.cancelled() or task.exception() is not None:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = _Entry(task.result(), slot[1], slot[2], started + self._ttl)
