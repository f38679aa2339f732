"""Invariants 3 and 5: a projector applies each event once in effect across kills and restarts,
and a rebuild from the event store gives the same rows, swapped in without a gap for readers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest
from nats.js.errors import NotFoundError

from domain.events import Event, encode_event
from domain.inventory import events as inventory
from infra.db import create_pool
from infra.eventstore import ANY_VERSION, Metadata, PendingAppend, RecordedEvent, append
from infra.settings import Settings
from infra.supervise import stop_task
from projections.availability import AvailabilityProjection
from projections.framework import (
    apply_batch,
    apply_events,
    create_schema,
    ensure_live_schema,
    live_schema,
    read_checkpoint,
)
from projections.rebuild import rebuild
from projections.verify import verify
from services.workers.projector import Projector, consumer_name
from services.workers.relay import Relay
from tests.integration.sample_projection import (
    CountedOnlyProjection,
    TallyCounted,
    TallyNoted,
    TallyProjection,
)
from tests.servers import CuttableProxy

META = Metadata(actor="test")
TABLE = f"{live_schema(TallyProjection())}.tallies"


@contextlib.asynccontextmanager
async def running(coro):
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        await stop_task(task)


async def _expected(pool: asyncpg.Pool) -> dict[str, int]:
    """The truth, straight from the event store."""
    rows = await pool.fetch(
        "SELECT stream_id, sum((data->>'amount')::bigint) AS total FROM events"
        " WHERE stream_id LIKE 'tally-%' GROUP BY stream_id"
    )
    return {r["stream_id"]: r["total"] for r in rows}


async def _rows(pool: asyncpg.Pool) -> list[tuple]:
    with contextlib.suppress(asyncpg.UndefinedTableError):
        return [tuple(r) for r in await pool.fetch(f"SELECT * FROM {TABLE} ORDER BY stream_id")]
    return []


async def _wait_for(predicate, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def _write(
    pool: asyncpg.Pool, run: str, count: int, seed: int, until: asyncio.Event | None = None
) -> None:
    """`count` counted events over eight streams, or fewer if `until` is set first."""
    rng = random.Random(seed)
    for _ in range(count):
        if until is not None and until.is_set():
            return
        stream = f"tally-{run}{rng.randrange(8)}"
        event = TallyCounted(amount=rng.randrange(1, 100))
        await append(pool, [PendingAppend(stream, ANY_VERSION, [event])], META)


async def _matches_store(pool: asyncpg.Pool) -> bool:
    totals = {row[0]: row[1] for row in await _rows(pool)}
    return totals == await _expected(pool)


async def test_projector_killed_mid_stream_ends_like_a_rebuild(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    async with running(Relay(pool, js, settings, name=f"proj-{run}").run()):
        first = Projector(pool, js, settings, TallyProjection(), batch_size=20)
        async with running(first.run()):
            await _write(pool, run, 200, seed=1)
            await _wait_for(lambda: _applied_at_least(first, 40))
            enough = asyncio.Event()
            writer = asyncio.create_task(_write(pool, run, 20_000, seed=4, until=enough))
            await _wait_for(lambda: _applied_at_least(first, 260))
        # Killed mid-stream: the writer goes on until the next projector has applied some.
        second = Projector(pool, js, settings, TallyProjection(), batch_size=20)
        async with running(second.run()):
            await _wait_for(lambda: _applied_at_least(second, 40))
            enough.set()
            await writer
            await _wait_for(lambda: _matches_store(pool))
            live = await _rows(pool)
    for stream_id, _total, versions in live:
        assert versions == list(range(1, len(versions) + 1)), f"{stream_id}: {versions}"
    await rebuild(pool, TallyProjection())
    assert await _rows(pool) == live


async def test_events_that_pass_a_read_model_by_move_its_checkpoint_without_losing_one(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    """A read model that names the events it reads passes over the others: a counted event
    among hundreds that are not is applied all the same, and once the stream is quiet the
    checkpoint stands at the last event."""
    run = uuid.uuid4().hex[:8]
    projection = CountedOnlyProjection()
    table = f"{live_schema(projection)}.tallies"
    stream = f"counted-{run}"

    async def note(count: int) -> None:
        for n in range(count):
            await append(
                pool, [PendingAppend(stream, ANY_VERSION, [TallyNoted(note=str(n))])], META
            )

    async def caught_up() -> bool:
        head = await pool.fetchrow(
            "SELECT tx_id::text::bigint AS tx_id, position FROM events WHERE stream_id = $1"
            " ORDER BY version DESC LIMIT 1",
            stream,
        )
        checkpoint = await read_checkpoint(pool, live_schema(projection))
        return (checkpoint.tx_id, checkpoint.position) == (head["tx_id"], head["position"])

    relay = Relay(pool, js, settings, name=f"pb-{run}")
    projector = Projector(pool, js, settings, projection, batch_size=5)
    async with running(relay.run()), running(projector.run()):
        await note(120)
        await append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=7)])], META)
        await note(80)
        await _wait_for(caught_up)
        rows = await pool.fetch(f"SELECT total, versions FROM {table} WHERE stream_id = $1", stream)
    assert [tuple(r) for r in rows] == [(7, [121])]


class _Poisoned(TallyProjection):
    """Tallies of streams of their own, where a total that overflows fails the read model."""

    name: ClassVar[str] = "tally_poisoned"
    categories: ClassVar[tuple[str, ...]] = ("poisoned",)


async def _totals(pool: asyncpg.Pool, projection: TallyProjection, stream: str) -> list[tuple]:
    table = f"{live_schema(projection)}.tallies"
    with contextlib.suppress(asyncpg.UndefinedTableError):  # not made by its projector yet
        rows = await pool.fetch(f"SELECT total, versions FROM {table} WHERE stream_id = $1", stream)
        return [tuple(r) for r in rows]
    return []


async def test_read_models_kept_together_end_like_each_on_its_own(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    """One consumer and one transaction per batch for several read models: each applies the
    events of its own categories once, and a read model that a batch fails alone is set apart
    (a consumer of its own, retrying from its checkpoint) while the others go on."""
    run = uuid.uuid4().hex[:8]
    counted, poisoned = CountedOnlyProjection(), _Poisoned()
    mine, bad = f"counted-{run}", f"poisoned-{run}"

    async def add(stream: str, *amounts: int) -> None:
        for amount in amounts:
            await append(
                pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=amount)])], META
            )

    projector = Projector(pool, js, settings, counted, poisoned, batch_size=5)
    relay = Relay(pool, js, settings, name=f"tg-{run}")
    async with running(relay.run()), running(projector.run()):
        await add(mine, 1, 2)
        await add(bad, 3)
        await add(mine, 4)

        async def both_applied() -> bool:
            return await _totals(pool, counted, mine) == [(7, [1, 2, 3])] and await _totals(
                pool, poisoned, bad
            ) == [(3, [1])]

        await _wait_for(both_applied)
        await add(bad, 2**63 - 1)
        await add(mine, 10, 20)

        async def counted_on() -> bool:
            return await _totals(pool, counted, mine) == [(37, [1, 2, 3, 4, 5])]

        await _wait_for(counted_on)
        assert projector.projections == [counted]

        async def consumes_apart() -> bool:
            """The set-apart read model's own consumer (its projector subscribes in a task
            of its own, which on a busy machine may come after the others' next batch)."""
            try:
                await js.consumer_info(settings.nats_stream, consumer_name(poisoned))
            except NotFoundError:
                return False
            return True

        await _wait_for(consumes_apart)
        assert await _totals(pool, poisoned, bad) == [(3, [1])]


class _Kept(TallyProjection):
    """Tallies of streams of their own again, never poisoned."""

    name: ClassVar[str] = "tally_kept"
    categories: ClassVar[tuple[str, ...]] = ("kept",)


async def test_read_models_kept_together_wait_out_the_database_together(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    """The database going away is no read model's fault: the projector keeps them together,
    retries once it answers, and every event written meanwhile reaches both."""
    url = urlsplit(settings.database_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.restore()
    user, _, _ = url.netloc.rpartition("@")
    through = urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{proxy.port}".lstrip("@")))
    run = uuid.uuid4().hex[:8]
    counted, kept = CountedOnlyProjection(), _Kept()
    mine, other = f"counted-{run}", f"kept-{run}"

    async def add(stream: str, amount: int) -> None:
        await append(
            pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=amount)])], META
        )

    async def both(total: int, versions: list[int]) -> bool:
        return await _totals(pool, counted, mine) == [(total, versions)] and await _totals(
            pool, kept, other
        ) == [(total, versions)]

    cut_off = await create_pool(through, 2)
    projector = Projector(
        cut_off, js, dataclasses.replace(settings, database_url=through), counted, kept
    )
    try:
        relay = Relay(pool, js, settings, name=f"tw-{run}")
        async with running(relay.run()), running(projector.run()):
            await add(mine, 1)
            await add(other, 1)
            await _wait_for(lambda: both(1, [1]))
            await proxy.cut()
            await add(mine, 2)
            await add(other, 2)
            await asyncio.sleep(1.0)
            await proxy.restore()
            await _wait_for(lambda: both(3, [1, 2]))
            assert projector.projections == [counted, kept]
    finally:
        await proxy.cut()
        cut_off.terminate()


async def _applied_at_least(projector: Projector, n: int) -> bool:
    return projector.applied >= n


async def test_rebuild_while_reading_and_writing_never_serves_a_partial_model(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    async with running(Relay(pool, js, settings, name=f"rb-{run}").run()):
        projector = Projector(pool, js, settings, TallyProjection(), batch_size=50)
        async with running(projector.run()):
            await _write(pool, run, 300, seed=2)
            await _wait_for(lambda: _matches_store(pool))
            floor = len(await _rows(pool))
            seen: list[int] = []

            async def read_continuously() -> None:
                while True:
                    seen.append(len(await _rows(pool)))
                    await asyncio.sleep(0)

            async with running(read_continuously()):
                writer = asyncio.create_task(_write(pool, run + "b", 200, seed=3))
                await rebuild(pool, TallyProjection())
                await rebuild(pool, TallyProjection())
                await writer
                await _wait_for(lambda: _matches_store(pool))
            assert seen, "the reader never ran"
            assert min(seen) >= floor, "a read saw an empty or half-built model"
            live = await _rows(pool)
    await rebuild(pool, TallyProjection())
    assert await _rows(pool) == live


async def test_rebuilds_and_a_verify_started_at_once_take_turns(pool: asyncpg.Pool) -> None:
    """Each builds in scratch schemas of fixed names: started together (two operators, two
    `rebuild --all`), none drops the other's, and the model ends as one rebuild leaves it."""
    run = uuid.uuid4().hex[:8]
    await _write(pool, run, 120, seed=5)
    projection = TallyProjection()
    await rebuild(pool, projection)
    expected = await _rows(pool)
    results = await asyncio.gather(
        rebuild(pool, projection),
        rebuild(pool, projection),
        verify(pool, projection),
        rebuild(pool, projection),
        return_exceptions=True,
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert results[2] == []  # the verify found the live model equal to its replay
    assert await _rows(pool) == expected


NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _recorded(first_position: int, *events: tuple[str, Event]) -> list[RecordedEvent]:
    """`events` (stream, event) as the store would hand them out, from `first_position` on."""
    return [
        RecordedEvent(
            event_id=uuid.uuid4().hex,
            stream_id=stream,
            version=n,
            type=type(event).__name__,
            data=msgspec.Raw(encode_event(event)),
            metadata=META,
            recorded_at=NOW,
            tx_id=first_position + n,
            position=first_position + n,
        )
        for n, (stream, event) in enumerate(events, 1)
    ]


def _seat(number: int, type_id: int = 7) -> inventory.HeldSeat:
    return inventory.HeldSeat(section_id=1, row="A", seat_number=number, ticket_type_id=type_id)


def _holds() -> list[RecordedEvent]:
    """Seats held, given back and held again by another purchase, a refund's part of a hold
    returned, and attraction places held and released (sums of zero) in one busy stretch."""
    day = date(2026, 12, 24)

    def held(token: str, *seats: int) -> inventory.SeatsHeld:
        return inventory.SeatsHeld(
            event_id=5,
            purchase_token=token,
            seats=[_seat(n) for n in seats],
            counts={7: len(seats)},
            expires_at=NOW,
        )

    def released(kind: type, token: str, *seats: int) -> Event:
        return kind(
            event_id=5,
            purchase_token=token,
            seats=[_seat(n) for n in seats],
            counts={7: len(seats)},
            reason="test",
        )

    def places(kind: type, **more: object) -> Event:
        return kind(attraction_id=3, purchase_token="q", visit_date=day, counts={9: 2}, **more)

    return _recorded(
        100,
        ("event-5", held("p1", 1, 2)),
        ("event-5", held("p2", 3, 4)),
        ("event-5", released(inventory.SeatsReleased, "p1", 1, 2)),
        ("event-5", held("p3", 1)),
        ("event-5", released(inventory.SeatsReturned, "p2", 4)),
        ("attraction-3", places(inventory.AttractionTicketsHeld, expires_at=NOW)),
        ("event-5", held("p4", 2)),
        ("attraction-3", places(inventory.AttractionTicketsReleased, reason="test")),
    )


async def _availability_rows(conn: asyncpg.Connection, schema: str) -> dict[str, list[tuple]]:
    return {
        table: sorted(tuple(r) for r in await conn.fetch(f"SELECT * FROM {schema}.{table}"))
        for table in ("taken_seats", "taken_counts", "attraction_days")
    }


@contextlib.asynccontextmanager
async def _scratch_schema(pool: asyncpg.Pool, label: str):
    schema = f"t_{label}_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await create_schema(conn, AvailabilityProjection(), schema)
        try:
            yield conn, schema
        finally:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def _apply_in_batches(
    conn: asyncpg.Connection, schema: str, batches: Sequence[Sequence[RecordedEvent]]
) -> list[int]:
    applied = []
    for batch in batches:
        async with conn.transaction():
            applied.append(await apply_events(conn, AvailabilityProjection(), schema, batch))
    return applied


async def test_a_batch_applied_set_wise_leaves_the_rows_of_one_event_at_a_time(
    pool: asyncpg.Pool,
) -> None:
    """Invariant 5 with set-wise SQL: wherever the batches are cut (the live projector's
    fetches, a rebuild's pages), the read model ends the same."""
    events = _holds()
    results = []
    for cut in ([events], [[e] for e in events], [events[:3], events[3:4], events[4:]]):
        async with _scratch_schema(pool, "availability") as (conn, schema):
            await _apply_in_batches(conn, schema, cut)
            results.append(await _availability_rows(conn, schema))
    assert results[0] == results[1] == results[2]
    assert results[0] == {
        "taken_seats": [(5, 1, "A", 1, 7, "p3"), (5, 1, "A", 2, 7, "p4"), (5, 1, "A", 3, 7, "p2")],
        "taken_counts": [(7, 3), (9, 0)],
        "attraction_days": [(3, date(2026, 12, 24), 0)],
    }


async def test_a_batch_delivered_again_applies_only_what_is_new(pool: asyncpg.Pool) -> None:
    """A crash between the commit and the ack: NATS delivers the batch again, with more behind
    it. Only the new events count, once."""
    events = _holds()
    async with _scratch_schema(pool, "redelivered") as (conn, schema):
        applied = await _apply_in_batches(conn, schema, [events[:5], events[:5], events[2:]])
        assert applied == [5, 0, 3]
        redelivered = await _availability_rows(conn, schema)
    async with _scratch_schema(pool, "once") as (conn, schema):
        await _apply_in_batches(conn, schema, [events])
        assert await _availability_rows(conn, schema) == redelivered


class _Tallies(TallyProjection):
    """The tally read model under a name of this test's own."""

    name: ClassVar[str] = "tally_batches"


async def test_a_failing_batch_leaves_neither_rows_nor_checkpoint(pool: asyncpg.Pool) -> None:
    """The live unit of work: rows and checkpoint commit together or not at all, and the
    projector's connection is fit for the next batch (redelivery) afterwards."""
    projection = _Tallies()
    await ensure_live_schema(pool, projection)
    schema = live_schema(projection)
    stream = f"tally-{uuid.uuid4().hex[:8]}"
    good, overflowing = _recorded(
        0, (stream, TallyCounted(amount=1)), (stream, TallyCounted(amount=2**63 - 1))
    )
    async with pool.acquire() as conn:
        before = await read_checkpoint(conn, schema)
        with pytest.raises(asyncpg.NumericValueOutOfRangeError):
            await apply_batch(conn, projection, [good, overflowing])
        assert await read_checkpoint(conn, schema) == before
        assert (
            await conn.fetch(f"SELECT * FROM {schema}.tallies WHERE stream_id = $1", stream) == []
        )
        assert await apply_batch(conn, projection, [good]) == 1
        total = await conn.fetchval(
            f"SELECT total FROM {schema}.tallies WHERE stream_id = $1", stream
        )
    assert total == 1


async def test_a_second_projector_of_the_same_read_models_stands_by_and_loses_nothing(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    """Two projector processes of one read model (a second `linjerum projector`, or a second
    run on the same servers) shared one durable consumer: JetStream dealt the batches out
    between them, each moved the checkpoint past events the other had not applied, and those
    were never applied. Now one applies and the other stands by until it stops."""
    run = uuid.uuid4().hex[:8]
    async with running(Relay(pool, js, settings, name=f"proj-{run}").run()):
        first = Projector(pool, js, settings, TallyProjection(), batch_size=20)
        second = Projector(pool, js, settings, TallyProjection(), batch_size=20)
        async with running(first.run()) as leading:
            await _write(pool, run, 20, seed=6)
            await _wait_for(lambda: _applied_at_least(first, 20))
            async with running(second.run()):
                await _write(pool, run, 300, seed=7)
                await _wait_for(lambda: _matches_store(pool))
                assert second.applied == 0
                await stop_task(leading)
                await _write(pool, run, 100, seed=8)
                await _wait_for(lambda: _matches_store(pool))
                assert second.applied > 0
    for stream_id, _total, versions in await _rows(pool):
        assert versions == list(range(1, len(versions) + 1)), f"{stream_id}: {versions}"
