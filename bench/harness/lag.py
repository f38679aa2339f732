"""How far the read models are behind the event store while a benchmark runs: every read model's
checkpoint (and the relay's, the floor under them all) sampled every few milliseconds, then each
event of the run matched to the first sample whose checkpoint includes it. An event's lag is from
its `recorded_at` (stamped inside the append's transaction, just before its commit) to that
sample's time on the database's clock: an upper bound, within one sampling interval of the
moment its row became visible."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import asyncpg

from domain import streams
from harness.report import percentile_ms, verdict
from infra.eventstore import Position
from projections.framework import live_schema
from projections.registry import all_projections

RELAY = "relay (to NATS)"
SETTLE_SECONDS = 15.0  # after the load, how long the read models may take to catch up


def _checkpoints_sql() -> str:
    """Every checkpoint, each with the server's clock read after the statement's snapshot was
    taken: what the snapshot shows was visible by then. The sample's time is the database's,
    as `recorded_at` is, not when this busy process got round to the answer."""
    at = "extract(epoch FROM clock_timestamp())::float8"
    parts = [
        f"SELECT '{name}' AS name, tx_id::text::bigint AS tx_id, position, {at} AS at"
        f" FROM {live_schema(projection)}.checkpoint"
        for name, projection in all_projections().items()
    ]
    parts.append(
        f"SELECT '{RELAY}', tx_id::text::bigint, position, {at}"
        " FROM relay_checkpoint WHERE name = 'main'"
    )
    return " UNION ALL ".join(parts)


@dataclass
class Lags:
    """Per read model (and the relay), each event's lag in seconds; `behind`: events the model
    had not applied when sampling ended."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    behind: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rows = []
        for name, lags in self.seconds.items():
            rows.append(
                f"  {name:24} {len(lags):7d} events  p50 {percentile_ms(lags, 0.5):7.1f} ms"
                f"  p99 {percentile_ms(lags, 0.99):7.1f} ms"
                f"  max {max(lags, default=float('nan')) * 1000:7.1f} ms"
                + (f"  ({self.behind[name]} never applied)" if self.behind.get(name) else "")
            )
        return rows

    def worst_p99_ms(self) -> float:
        """The slowest read model's p99 (the relay excluded: it is not a read model)."""
        return max(
            (percentile_ms(v, 0.99) for n, v in self.seconds.items() if n != RELAY and v),
            default=float("nan"),
        )


class _OwnLoop:
    """A watcher's coroutine on an event loop of its own, in a thread: on the load generator's
    loop a sample's time would be taken when the busy loop got round to its answer, and every
    lag measured would include the load generator's own delay."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _launch(self, work: Callable[[asyncio.Event], Awaitable[None]], name: str) -> None:
        started = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            started.set()
            try:
                await work(self._stop)
            except BaseException as exc:  # re-raised in the caller's thread by _join
                self._error = exc

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name=name)
        self._thread.start()
        started.wait()

    def _ask_to_stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        with contextlib.suppress(RuntimeError):  # its loop has finished already
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _join(self, timeout: float | None = None) -> bool:
        """Whether the thread has finished (within `timeout`); its error is raised here."""
        assert self._thread is not None
        await asyncio.to_thread(self._thread.join, timeout)
        if self._error is not None:
            raise self._error
        return not self._thread.is_alive()


class LagSampler(_OwnLoop):
    """Samples the checkpoints from `start()` to `stop()`, every `interval` seconds, on a loop
    of its own."""

    def __init__(self, database_url: str, interval: float = 0.01) -> None:
        super().__init__()
        self._url = database_url
        self._interval = interval
        self._sql = _checkpoints_sql()
        self._times: list[float] = []
        self._seen: dict[str, list[Position]] = {}
        self._ready = threading.Event()
        self._lags = Lags()

    async def start(self) -> None:
        """Returns once the run's first position is known and sampling has begun."""
        self._launch(self._run, "lag-sampler")
        await asyncio.to_thread(self._ready.wait)

    async def stop(self) -> Lags:
        """Samples on (at most SETTLE_SECONDS) until every model has applied the run's events,
        then matches each event of the run to the first sample that includes it."""
        self._ask_to_stop()
        await self._join()
        return self._lags

    async def _run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            after = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            self._ready.set()
            while not stop.is_set():
                await self._sample_once(conn)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval)
            events = await conn.fetch(
                "SELECT stream_id, tx_id::text::bigint AS tx_id, position, recorded_at"
                " FROM events WHERE position > $1",
                after,
            )
            deadline = time.monotonic() + SETTLE_SECONDS
            while not self._caught_up(events) and time.monotonic() < deadline:
                await self._sample_once(conn)
                await asyncio.sleep(self._interval)
            self._lags = self._match(events)
        finally:
            self._ready.set()
            await conn.close()

    async def _sample_once(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(self._sql)
        if not rows:
            return
        self._times.append(min(row["at"] for row in rows))
        for row in rows:
            self._seen.setdefault(row["name"], []).append(Position(row["tx_id"], row["position"]))

    def _wanted(self, name: str, events: list[asyncpg.Record]) -> list[asyncpg.Record]:
        if name == RELAY:
            return events
        categories = all_projections()[name].categories
        return [e for e in events if streams.category(e["stream_id"]) in categories]

    def _caught_up(self, events: list[asyncpg.Record]) -> bool:
        for name, seen in self._seen.items():
            wanted = self._wanted(name, events)
            if wanted and max(Position(e["tx_id"], e["position"]) for e in wanted) > seen[-1]:
                return False
        return True

    def _match(self, events: list[asyncpg.Record]) -> Lags:
        lags = Lags()
        for name in sorted(self._seen, key=lambda n: (n == RELAY, n)):
            seen = self._seen[name]
            mine, behind = [], 0
            for event in self._wanted(name, events):
                at = bisect.bisect_left(seen, Position(event["tx_id"], event["position"]))
                if at == len(seen):
                    behind += 1
                    continue
                recorded: datetime = event["recorded_at"]
                mine.append(max(0.0, self._times[at] - recorded.timestamp()))
            lags.seconds[name], lags.behind[name] = mine, behind
        return lags


class SoldOutWatch(_OwnLoop):
    """Polls an availability URL every `interval` seconds until it says `sold_out`: when the
    partner's page would first show the event sold out. On a loop of its own, as the lag
    sampler."""

    def __init__(self, url: str, headers: dict[str, str], interval: float = 0.02) -> None:
        super().__init__()
        self._url = url
        self._headers = headers
        self.interval = interval
        self.seen_at: float | None = None

    def start(self, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        self._launch(lambda stop: self._watch(deadline, stop), "sold-out-watch")

    async def _watch(self, deadline: float, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session:
            while time.monotonic() < deadline and not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(self._url) as response:
                        body = await response.json(content_type=None)
                    if response.status == 200 and body.get("status") == "sold_out":
                        self.seen_at = time.time()
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)

    async def stop(self, grace: float = SETTLE_SECONDS) -> None:
        """Waits (at most `grace` s) for the sold-out answer, then stops watching."""
        if not await self._join(grace):
            self._ask_to_stop()
            await self._join()


async def last_hold_at(pool: asyncpg.Pool, event_id: int) -> float | None:
    """When the event's last seats were held (the append's `recorded_at`), as a Unix time."""
    at = await pool.fetchval(
        "SELECT max(recorded_at) FROM events WHERE stream_id = $1 AND type = 'SeatsHeld'",
        streams.event(event_id),
    )
    return at.timestamp() if at is not None else None


def sold_out_line(watch: SoldOutWatch, last_hold: float | None, target_ms: float) -> str:
    if watch.seen_at is None or last_hold is None:
        return "availability: never said sold_out while watched"
    delay = (watch.seen_at - last_hold) * 1000
    return (
        f"availability said sold_out {delay:.0f} ms after the last hold (polled every"
        f" {watch.interval * 1000:g} ms; target <= {target_ms:g} ms: {verdict(delay <= target_ms)})"
    )
