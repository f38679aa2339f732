"""A sales desk's snapshots (infra/snapshots.py): a desk that starts cold begins from its stream's
latest snapshot and reads only the events after it; every `every` events it stores a new one in
the background, which never holds up or fails a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import asyncpg
import msgspec
import structlog

from infra import snapshots
from infra.supervise import stop_task
from services.usecases.desk_kinds import Cached

log = structlog.get_logger(__name__)

S = TypeVar("S")


class DeskSnapshots(Generic[S]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        stream_id: str,
        initial: S,
        clone: Callable[[S], S],
        every: int,
    ) -> None:
        self._pool = pool
        self._stream_id = stream_id
        self._clone = clone
        # `every` 0: snapshots neither read nor written (the stream folded in full).
        self._codec = snapshots.codec_for(initial) if every > 0 else None
        self._every = every
        # The version of the latest snapshot this desk read or began to write, and of the one
        # it last started from cold (0: it folded the stream from the start).
        self.version = 0
        self.started_from = 0
        self._writing: asyncio.Task[None] | None = None

    async def start(self, db: asyncpg.Pool | asyncpg.Connection) -> Cached[S] | None:
        """A cold desk's state from the stream's latest snapshot, if there is one it can trust;
        one this code cannot decode is passed over (the stream is the truth). A database that
        does not answer fails the batch, as the stream's own read would."""
        if self._codec is None:
            return None
        self.started_from = 0
        try:
            found = await snapshots.load(db, self._stream_id, self._codec)
        except msgspec.DecodeError as exc:
            log.warning("snapshot_unreadable", stream=self._stream_id, error=repr(exc))
            return None
        if found is None:
            return None
        self.version = self.started_from = found.version
        return Cached(found.state, found.version)

    def take_if_due(self, cached: Cached[S]) -> None:
        """Every `every` events, the cached state is copied now (the desk's worker goes on
        evolving it) and encoded and stored by a task of its own."""
        if (
            self._codec is None
            or cached.version - self.version < self._every
            or (self._writing is not None and not self._writing.done())
        ):
            return
        self.version = cached.version
        copy = self._clone(cached.state)
        self._writing = asyncio.create_task(self._write(self._codec, copy, cached.version))

    async def _write(self, codec: snapshots.Codec[S], state: S, version: int) -> None:
        try:
            data = await asyncio.to_thread(codec.encode, state)
            await snapshots.save(self._pool, self._stream_id, version, data, codec)
        except Exception as exc:
            log.warning(
                "snapshot_write_failed", stream=self._stream_id, version=version, error=repr(exc)
            )

    async def close(self) -> None:
        await stop_task(self._writing)
