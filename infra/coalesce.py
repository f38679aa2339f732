"""Reads asked for at the same moment, answered together: under load, requests that each take a
pool connection for one row queue behind each other for connections and the CPU; one round trip
for all of them is cheaper for every one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from infra.supervise import detached

K = TypeVar("K")
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    """Concurrent asks for keys, answered by one fetch of every key asked for while the fetch
    before was under way: a round trip (and a pool connection) for many requests instead of
    one each, which under load queue behind each other for connections and for the CPU."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], missing: V) -> None:
        """`fetch`: the keys' values in one round trip; `missing` for a key it did not find."""
        self._fetch = fetch
        self._missing = missing
        self._asked: dict[K, list[asyncio.Future[V]]] = {}
        self._worker: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        return await self._ask(key)

    async def get_many(self, keys: Sequence[K]) -> list[V]:
        """The keys' values, in their order, from the same fetch. A failed fetch fails every
        key: the first failure is raised and the others are marked taken, so none is reported
        as never retrieved (asyncio.gather would do the same at the cost of two more turns of
        a saturated event loop per read); a caller that stops waiting gives up the rest."""
        futures = [self._ask(key) for key in keys]
        try:
            return [await future for future in futures]
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()

    def _ask(self, key: K) -> asyncio.Future[V]:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(key, []).append(future)
        if self._worker is None or self._worker.done():
            self._worker = detached(self._work())
        return future

    async def _work(self) -> None:
        while self._asked:
            asked, self._asked = self._asked, {}
            waiting = [future for futures in asked.values() for future in futures]
            try:
                found = await self._fetch(list(asked))
            except Exception as exc:
                for future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for future in waiting:
                    future.cancel()
                raise
            for key, futures in asked.items():
                for future in futures:
                    if not future.done():  # its caller may have stopped waiting
                        future.set_result(found.get(key, self._missing))
