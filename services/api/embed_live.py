"""What the embedded pages' live streams are fed: each event's taken seats and each venue's
plan, re-read when the change feed says their read model moved, and pushed to the open streams
only when they differ from what those streams were last sent.

One watcher task per gateway serves every open stream: two hundred planners of one event cost
one read of its taken seats per change (and at most one every READ_SECONDS), not two hundred."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import structlog

from infra.changes import ChangeFeed
from infra.supervise import detached

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.05
READ_SECONDS = 0.2  # the fewest seconds between two reads of one event's taken seats
DARK_SECONDS = 1.0  # how often to read anyway while the change feed is not listening

Reader = Callable[[], Awaitable[bytes]]


class Listener:
    """One open stream: the latest message of each name not yet written (a newer state
    replaces an unsent older one, so a slow reader never falls behind)."""

    def __init__(self) -> None:
        self._pending: dict[str, bytes] = {}
        self._woken = asyncio.Event()
        self.closed = False

    def push(self, name: str, data: bytes) -> None:
        self._pending[name] = data
        self._woken.set()

    def close(self) -> None:
        self.closed = True
        self._woken.set()

    async def next(self, timeout: float) -> list[tuple[str, bytes]]:
        """The messages to write, or none after `timeout` seconds (time for a ping)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._woken.wait()
        self._woken.clear()
        sent, self._pending = list(self._pending.items()), {}
        return sent


@dataclass(eq=False)
class _Watch:
    name: str
    channel: str
    read: Reader
    on_connect: bool  # whether a stream gets the current state when it opens
    message: Callable[[bytes], bytes]
    listeners: set[Listener] = field(default_factory=set)
    state: bytes | None = None
    generation: int | None = None
    read_at: float = float("-inf")


class LiveFeed:
    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed
        self._watches: dict[Hashable, _Watch] = {}
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task[None] | None = None

    def listen(self) -> Listener:
        listener = Listener()
        self._listeners.add(listener)
        return listener

    def watch(
        self,
        listener: Listener,
        key: Hashable,
        name: str,
        channel: str,
        read: Reader,
        *,
        on_connect: bool,
        message: Callable[[bytes], bytes] = lambda state: state,
    ) -> None:
        """Sends `listener` the message `name` whenever what `read` returns changes (re-read
        when `channel` moves); at once too when `on_connect` and the state is known."""
        found = self._watches.get(key)
        if found is None:
            found = self._watches[key] = _Watch(name, channel, read, on_connect, message)
        found.listeners.add(listener)
        if on_connect and found.state is not None:
            listener.push(name, message(found.state))
        if self._task is None or self._task.done():
            self._task = detached(self._run(), name="embed-live")

    def leave(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        for key, watch in list(self._watches.items()):
            watch.listeners.discard(listener)
            if not watch.listeners:
                del self._watches[key]

    async def close(self) -> None:
        """Ends every open stream (the gateway is shutting down) and the watcher."""
        for listener in self._listeners:
            listener.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while self._watches:
            for watch in list(self._watches.values()):
                if watch.listeners and self._due(watch, time.monotonic()):
                    await self._refresh(watch)
            await asyncio.sleep(TICK_SECONDS)

    def _due(self, watch: _Watch, now: float) -> bool:
        generation = self._feed.generation(watch.channel)
        if watch.state is None:
            return now - watch.read_at >= DARK_SECONDS
        if generation is None:
            return now - watch.read_at >= DARK_SECONDS
        return generation != watch.generation and now - watch.read_at >= READ_SECONDS

    async def _refresh(self, watch: _Watch) -> None:
        """The generation is taken before the read: a change during it is read again."""
        watch.generation = self._feed.generation(watch.channel)
        watch.read_at = time.monotonic()
        try:
            state = await watch.read()
        except Exception as exc:
            log.warning("embed_live_read_failed", watch=watch.name, error=repr(exc))
            return
        first = watch.state is None
        if state == watch.state:
            return
        watch.state = state
        if first and not watch.on_connect:
            return
        for listener in watch.listeners:
            listener.push(watch.name, watch.message(state))
