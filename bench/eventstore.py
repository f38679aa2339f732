"""Event store benchmark: prints appends per second (many streams, one transaction each and
group-committed; one hot stream under contention) and event-to-projection lag, beside the
ceiling of the same database measured in the same run: plain single-row INSERT commits per
second from the same number of connections. The lag is the steady state: the relay first
publishes what the append phases wrote (its catch-up is printed on its own) and one event goes
through the projector before the clock starts.

    make bench                       # embedded servers under .linjerum-bench/
    DATABASE_URL=... NATS_URL=... .venv/bin/python bench/eventstore.py --rounds 5

Every loop is bounded in time and count; the benchmark uses a database and stream of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from typing import ClassVar, NamedTuple

import asyncpg
import nats
from harness.load import bounded, insert_ceiling
from harness.setup import META, bench_settings

from domain.events import Event
from infra.append_batcher import AppendBatcher
from infra.bus import ensure_stream
from infra.db import create_pool, migrate
from infra.eventstore import ANY_VERSION, ConcurrencyError, PendingAppend, RecordedEvent, append
from infra.global_order import head
from infra.logging import configure_logging
from infra.settings import Settings
from infra.supervise import stop_tasks
from projections.framework import live_schema, read_checkpoint
from services.workers.projector import Projector
from services.workers.relay import Relay


class SeatCounted(Event, frozen=True):
    seats: int


class CounterProjection:
    name: ClassVar[str] = "bench_counter"
    categories: ClassVar[tuple[str, ...]] = ("benchcount",)
    tables_sql: ClassVar[str] = (
        "CREATE TABLE {schema}.counts (stream_id text PRIMARY KEY, seats bigint NOT NULL)"
    )

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        counted = event.event()
        assert isinstance(counted, SeatCounted)
        await conn.execute(
            f"INSERT INTO {schema}.counts VALUES ($1, $2) ON CONFLICT (stream_id)"
            " DO UPDATE SET seats = counts.seats + EXCLUDED.seats",
            event.stream_id,
            counted.seats,
        )


async def many_streams(pool: asyncpg.Pool, seconds: float, workers: int, *, grouped: bool) -> float:
    """One-event appends, each at its stream's known version, to streams of their own. Grouped:
    through an AppendBatcher, several streams' appends in one statement and one commit (how the
    payment recorder appends); else one `append`, one transaction, each."""
    run = uuid.uuid4().hex[:6]
    versions: dict[str, int] = {}
    batcher = AppendBatcher(pool) if grouped else None

    async def op(worker: int) -> None:
        stream = f"benchmany-{run}{worker}x{random.randrange(50)}"
        pending = [PendingAppend(stream, versions.get(stream, 0), [SeatCounted(seats=1)])]
        stored = await (batcher.append(pending, META) if batcher else append(pool, pending, META))
        versions[stream] = stored[stream]

    try:
        return await bounded(seconds, workers, op)
    finally:
        if batcher is not None:
            await batcher.close()


async def hot_stream(pool: asyncpg.Pool, seconds: float, workers: int) -> tuple[float, int]:
    """Every writer decides against the stream's current version and retries on conflict:
    what naive command handling does on one event's inventory."""
    stream = f"benchhot-{uuid.uuid4().hex[:6]}"
    conflicts = 0

    async def op(_: int) -> None:
        nonlocal conflicts
        for _attempt in range(100):
            version = await pool.fetchval(
                "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream
            )
            try:
                await append(pool, [PendingAppend(stream, version, [SeatCounted(seats=1)])], META)
                return
            except ConcurrencyError:
                conflicts += 1

    return await bounded(seconds, workers, op), conflicts


class Round(NamedTuple):
    """Appends/s of one round, each phase beside the ceiling measured just before it."""

    ceiling: float
    alone: float
    grouped: float


def _mean(rounds: list[Round], field: str) -> float:
    return statistics.mean(getattr(r, field) for r in rounds)


def _share(rounds: list[Round], field: str) -> float:
    """The median over rounds of a phase's rate over its round's ceiling."""
    return statistics.median(getattr(r, field) / r.ceiling for r in rounds)


class Lag(NamedTuple):
    p50_ms: float
    p99_ms: float
    samples: int
    backlog: int
    catch_up_seconds: float


async def warm_up(pool: asyncpg.Pool, relay: Relay, projector: Projector) -> tuple[int, float]:
    """Wait (at most a minute each) until the relay has published what the earlier phases wrote,
    then until an append from every pooled connection has gone all the way through the
    projector, and so everything before them: the lag measured next is the steady state at the
    given rate, not the time to work off a backlog (reported on its own) or to prepare
    statements on connections that have not run them yet. Returns the backlog and the seconds
    it took to publish."""
    start = time.perf_counter()
    backlog = await pool.fetchval("SELECT count(*) FROM events")
    while relay.published < backlog and time.perf_counter() < start + 60:
        await asyncio.sleep(0.01)
    caught_up = time.perf_counter() - start
    stream = f"benchcount-warmup{uuid.uuid4().hex[:6]}"
    connections = pool.get_max_size()
    await asyncio.gather(
        *(
            append(pool, [PendingAppend(stream, ANY_VERSION, [SeatCounted(seats=1)])], META)
            for _ in range(connections)
        )
    )
    # `applied` counts the backlog too: the projector is through it when its checkpoint has
    # reached the last of these appends.
    last = await head(pool)
    schema = live_schema(projector.projections[0])
    while await read_checkpoint(pool, schema) < last and time.perf_counter() < start + 120:
        await asyncio.sleep(0.01)
    return backlog, caught_up


async def projection_lag(pool: asyncpg.Pool, settings: Settings, rate: int, seconds: float) -> Lag:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    projector = Projector(pool, js, settings, CounterProjection(), batch_size=500)
    projector.record_lag = True
    relay = Relay(pool, js, settings)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(projector.run())]
    backlog, catch_up_seconds = await warm_up(pool, relay, projector)
    run = uuid.uuid4().hex[:6]
    total = int(rate * seconds)
    before = len(projector.lag_samples)
    start = time.perf_counter()
    pending = set()
    for i in range(total):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.add(
            asyncio.create_task(
                append(
                    pool,
                    [
                        PendingAppend(
                            f"benchcount-{run}{i % 40}", ANY_VERSION, [SeatCounted(seats=1)]
                        )
                    ],
                    META,
                )
            )
        )
        pending = {t for t in pending if not t.done()}
    await asyncio.gather(*pending)
    deadline = time.perf_counter() + 30
    while len(projector.lag_samples) < before + total and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await stop_tasks(tasks)
    await nc.close()
    samples = sorted(projector.lag_samples[before:])
    p99 = samples[int(len(samples) * 0.99) - 1] if samples else float("nan")
    return Lag(
        statistics.median(samples) * 1000, p99 * 1000, len(samples), backlog, catch_up_seconds
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    async with bench_settings(args.data_dir, "eventstore") as settings:
        pool = await create_pool(settings.database_url, size=args.connections + 4)
        try:
            await migrate(pool)
            w, s = args.connections, args.seconds
            # Rounds alternate the ceiling and the appends, so a neighbour's burst on a shared
            # machine skews one round rather than one side of the comparison.
            rounds = [
                Round(
                    await insert_ceiling(pool, s, w),
                    await many_streams(pool, s, w, grouped=False),
                    await many_streams(pool, s, w, grouped=True),
                )
                for _ in range(args.rounds)
            ]
            hot, conflicts = await hot_stream(pool, s, w)
            lag = await projection_lag(pool, settings, args.rate, s)
        finally:
            await pool.close()
    print(f"connections: {w}, seconds per phase: {s}, rounds of ceiling + appends: {args.rounds}")
    ceiling = _mean(rounds, "ceiling")
    print(f"ceiling: plain single-row INSERT commits/s                {ceiling:10.0f}")
    for field, what, target in (
        ("alone", "one transaction each", ""),
        ("grouped", "group-committed     ", ", target >= 70%"),
    ):
        print(
            f"appends/s across many streams, {what}{_mean(rounds, field):10.0f}"
            f"   ({_share(rounds, field):.0%} of ceiling, median of the rounds{target})"
        )
        print(
            "  by round: "
            + ", ".join(
                f"{getattr(r, field):.0f}/{r.ceiling:.0f} = {_share([r], field):.0%}"
                for r in rounds
            )
        )
    print(
        f"appends/s on one hot stream (reload + retry)              {hot:10.0f}"
        f"   ({conflicts} concurrency conflicts retried)"
    )
    print(
        f"relay catch-up on the {lag.backlog} events above: {lag.catch_up_seconds:.2f} s"
        f" ({lag.backlog / max(lag.catch_up_seconds, 1e-9):.0f} events/s)"
    )
    print(
        f"projection lag at {args.rate} events/s over {lag.samples} events: "
        f"p50 {lag.p50_ms:.1f} ms, p99 {lag.p99_ms:.1f} ms (target p99 < 50 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=int, default=500, help="events/s for the lag phase")
    parser.add_argument("--data-dir", default=".linjerum-bench")
    asyncio.run(main(parser.parse_args()))
