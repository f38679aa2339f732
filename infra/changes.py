"""PostgreSQL notifications turned into generation counters, so a process may keep answers in
memory exactly as long as nothing they were built from has changed.

Writers call `announce` inside the transaction that changes the rows: PostgreSQL delivers the
notification when (and only if) that transaction commits. A reader compares the generation it
built an answer at with the current one. While the listening connection is down, or before it
is up, `generation` is None and nothing may be served from memory: a notification that could not
be heard must never leave a stale answer in place."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from typing import Any

import asyncpg

from infra.db import connection_gone
from infra.supervise import serve_forever, stop_task

API_KEYS = "linjerum_api_keys"
RETRY_SECONDS = 1.0
APPLICATION_NAME = "linjerum-changes"


def read_model_channel(projection_name: str) -> str:
    """Each read model announces on a channel of its own, so answers built from some read
    models are not thrown away whenever another one (the tickets, say) changes."""
    return f"linjerum_rm_{projection_name}"


async def announce(conn: asyncpg.Connection, channel: str) -> None:
    await conn.execute("SELECT pg_notify($1, '')", channel)


class ChangeFeed:
    """One LISTEN connection per process for the channels given."""

    def __init__(self, pool: asyncpg.Pool, channels: tuple[str, ...]) -> None:
        self._pool = pool
        self._channels = channels
        self._generations = dict.fromkeys(channels, 0)
        self._live = False
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def generation(self, *channels: str) -> int | None:
        """A number that grows whenever any of the channels is announced; None while not
        listening."""
        return sum(self._generations[c] for c in channels) if self._live else None

    def start(self) -> None:
        serving = serve_forever(
            self._listen, "change_feed", first_pause=RETRY_SECONDS, longest_pause=RETRY_SECONDS
        )
        self._task = asyncio.create_task(serving, name="change-feed")

    async def stop(self) -> None:
        await stop_task(self._task)

    async def _listen(self) -> None:
        conn = await self._pool.acquire()
        try:
            await conn.execute(f"SET application_name = '{APPLICATION_NAME}'")
            lost = self._lost = asyncio.Event()
            conn.add_termination_listener(self._on_lost)
            for channel in self._channels:
                await conn.add_listener(channel, self._on_notify)
            # Nothing is kept while not live, and going dark moved every generation on: what
            # was cached before an outage is never served after it.
            self._live = True
            while not connection_gone(conn):
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that comes as it ends, and the feed would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    await self._ping(conn)
            raise ConnectionError("the change feed lost its LISTEN connection")
        finally:
            self._go_dark()
            await self._release(conn)

    @staticmethod
    async def _ping(conn: asyncpg.Connection) -> None:
        """A round trip that says whether the server is still there. One made as the server
        goes, before the termination is heard, finds the connection already taken back by the
        pool (InterfaceError): that is the lost connection, not a misuse to log as the cause."""
        try:
            await conn.fetchval("SELECT 1", timeout=5 * RETRY_SECONDS)
        except asyncpg.InterfaceError:
            if not connection_gone(conn):
                raise

    async def _release(self, conn: asyncpg.Connection) -> None:
        if connection_gone(conn):
            # A lost connection still carries the callbacks (asyncpg cannot UNLISTEN on it and
            # warns); the pool discards it all the same.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", asyncpg.InterfaceWarning)
                await self._pool.release(conn)
            return
        conn.remove_termination_listener(self._on_lost)
        with contextlib.suppress(Exception):
            for channel in self._channels:
                await conn.remove_listener(channel, self._on_notify)
            await conn.execute("RESET application_name")
        await self._pool.release(conn)

    def _on_lost(self, _conn: asyncpg.Connection) -> None:
        self._lost.set()

    def _on_notify(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        self._generations[channel] += 1

    def _go_dark(self) -> None:
        self._live = False
        for channel in self._generations:
            self._generations[channel] += 1
