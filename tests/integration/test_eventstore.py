"""Invariant 1: optimistic concurrency per stream, atomic across streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from domain.events import Event
from infra.append_batcher import append_each
from infra.db import migrate
from infra.eventstore import (
    ANY_VERSION,
    NO_STREAM,
    NOTIFY_CHANNEL,
    RELAY_SLEEP_LOCK,
    START,
    ConcurrencyError,
    Metadata,
    PendingAppend,
    append,
    read_stream,
)
from infra.global_order import head, read_all


class SampleHappened(Event, frozen=True):
    n: int


def _stream() -> str:
    return f"sample-{uuid.uuid4().hex}"


META = Metadata(request_id="req-1", actor="test")


async def test_migrations_are_idempotent(pool: asyncpg.Pool) -> None:
    assert await migrate(pool) == []


async def test_append_assigns_versions_and_reads_back(pool: asyncpg.Pool) -> None:
    s = _stream()
    versions = await append(pool, [PendingAppend(s, NO_STREAM, [SampleHappened(n=1)])], META)
    assert versions == {s: 1}
    await append(pool, [PendingAppend(s, 1, [SampleHappened(n=2), SampleHappened(n=3)])], META)
    events = await read_stream(pool, s)
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.event() for e in events] == [SampleHappened(n=i) for i in (1, 2, 3)]
    assert events[0].metadata == META
    assert len({e.event_id for e in events}) == 3


async def test_concurrent_appends_at_same_version_exactly_one_wins(pool: asyncpg.Pool) -> None:
    s = _stream()
    await append(pool, [PendingAppend(s, NO_STREAM, [SampleHappened(n=0)])], META)

    async def writer(n: int) -> str:
        try:
            await append(pool, [PendingAppend(s, 1, [SampleHappened(n=n)])], META)
        except ConcurrencyError as exc:
            assert exc.stream_id == s
            return "conflict"
        return "ok"

    results = await asyncio.gather(writer(1), writer(2))
    assert sorted(results) == ["conflict", "ok"]
    events = await read_stream(pool, s)
    assert [e.version for e in events] == [1, 2]


async def test_two_creators_of_a_new_stream(pool: asyncpg.Pool) -> None:
    s = _stream()
    results = await asyncio.gather(
        *(append(pool, [PendingAppend(s, NO_STREAM, [SampleHappened(n=i)])], META) for i in (1, 2)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 1
    assert len(await read_stream(pool, s)) == 1


async def test_multi_stream_append_is_all_or_nothing(pool: asyncpg.Pool) -> None:
    a, b = _stream(), _stream()
    await append(pool, [PendingAppend(b, NO_STREAM, [SampleHappened(n=0)])], META)
    with pytest.raises(ConcurrencyError) as info:
        await append(
            pool,
            [
                PendingAppend(a, NO_STREAM, [SampleHappened(n=1)]),
                PendingAppend(b, NO_STREAM, [SampleHappened(n=2)]),
            ],
            META,
        )
    assert info.value.stream_id == b
    assert await read_stream(pool, a) == []
    assert len(await read_stream(pool, b)) == 1


async def test_any_version_appends_without_check(pool: asyncpg.Pool) -> None:
    s = _stream()
    await asyncio.gather(
        *(
            append(pool, [PendingAppend(s, ANY_VERSION, [SampleHappened(n=i)])], META)
            for i in range(10)
        )
    )
    assert [e.version for e in await read_stream(pool, s)] == list(range(1, 11))


async def test_read_all_waits_for_a_transaction_still_open(pool: asyncpg.Pool) -> None:
    """An event of an open transaction holds back every later one: none is ever skipped."""
    early, late = _stream(), _stream()
    async with pool.acquire() as held:
        tx = held.transaction()
        await tx.start()
        await append(held, [PendingAppend(early, NO_STREAM, [SampleHappened(n=1)])], META)
        await append(pool, [PendingAppend(late, NO_STREAM, [SampleHappened(n=2)])], META)
        visible = {e.stream_id for e in await read_all(pool, limit=100_000)}
        assert late not in visible and early not in visible
        await tx.commit()
    visible = {e.stream_id for e in await read_all(pool, limit=100_000)}
    assert {early, late} <= visible


async def test_multi_stream_append_numbers_each_stream_on_its_own(pool: asyncpg.Pool) -> None:
    a, b = _stream(), _stream()
    await append(pool, [PendingAppend(b, NO_STREAM, [SampleHappened(n=0)])], META)
    versions = await append(
        pool,
        [
            PendingAppend(a, NO_STREAM, [SampleHappened(n=1), SampleHappened(n=2)]),
            PendingAppend(b, 1, [SampleHappened(n=3), SampleHappened(n=4), SampleHappened(n=5)]),
        ],
        META,
    )
    assert versions == {a: 2, b: 4}
    assert [e.version for e in await read_stream(pool, a)] == [1, 2]
    assert [e.event() for e in await read_stream(pool, b, after_version=1)] == [
        SampleHappened(n=i) for i in (3, 4, 5)
    ]


async def test_append_must_be_the_first_write_of_its_transaction(pool: asyncpg.Pool) -> None:
    """Stream locks are taken before the transaction has an id; a transaction that already has
    one could commit a stream's next version ahead of an earlier one in the relay's order."""
    s = _stream()
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="first write"):
            async with conn.transaction():
                await conn.execute("SELECT pg_current_xact_id()")
                await append(conn, [PendingAppend(s, NO_STREAM, [SampleHappened(n=1)])], META)
    assert await read_stream(pool, s) == []


async def test_an_append_notifies_only_while_the_relay_sleeps(pool: asyncpg.Pool) -> None:
    """A relay holds RELAY_SLEEP_LOCK exclusively while it sleeps: only then do appends notify (a
    notifying commit serialises every committer), and an append in flight keeps the relay from
    taking the lock until it commits, so the relay's last look before sleeping sees it."""
    heard: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        heard.put_nowait(str(args[2]))

    async with pool.acquire() as listener, pool.acquire() as relay:
        await listener.add_listener(NOTIFY_CHANNEL, on_notify)
        try:
            await append(pool, [PendingAppend(_stream(), NO_STREAM, [SampleHappened(n=1)])], META)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(heard.get(), 0.3)

            async with pool.acquire() as writer, writer.transaction():
                pending = PendingAppend(_stream(), NO_STREAM, [SampleHappened(n=2)])
                await append(writer, [pending], META)
                assert not await relay.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_SLEEP_LOCK)
            assert await relay.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_SLEEP_LOCK)
            await append(pool, [PendingAppend(_stream(), NO_STREAM, [SampleHappened(n=3)])], META)
            assert await asyncio.wait_for(heard.get(), 5) == NOTIFY_CHANNEL
        finally:
            await relay.execute("SELECT pg_advisory_unlock_all()")
            await listener.remove_listener(NOTIFY_CHANNEL, on_notify)


async def _waiting_for_a_stream_lock(pool: asyncpg.Pool) -> asyncpg.Record:
    """The backend of the append blocked on an advisory lock, once it is blocked."""
    async with asyncio.timeout(10):
        while True:
            row = await pool.fetchrow(
                "SELECT pid, backend_xid FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                " AND datname = current_database()"
            )
            if row:
                return row
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("first_commits", [True, False])
@pytest.mark.parametrize("streams", [1, 2])
async def test_an_append_takes_its_stream_locks_before_its_transaction_id(
    pool: asyncpg.Pool, first_commits: bool, streams: int
) -> None:
    """An append waits for its streams' locks before it is given a transaction id (the relay's
    order needs it), and a version read before the wait never lets it write over the append it
    waited for. One stream takes a single statement, several go through append_events."""
    s, other = _stream(), _stream()
    await append(pool, [PendingAppend(s, NO_STREAM, [SampleHappened(n=1)])], META)
    extra = [PendingAppend(other, NO_STREAM, [SampleHappened(n=4)])] if streams == 2 else []
    async with pool.acquire() as first:
        tx = first.transaction()
        await tx.start()
        await append(first, [PendingAppend(s, 1, [SampleHappened(n=2)])], META)
        second = asyncio.create_task(
            append(pool, [PendingAppend(s, 1, [SampleHappened(n=3)]), *extra], META)
        )
        waiting = await _waiting_for_a_stream_lock(pool)
        assert waiting["backend_xid"] is None
        await (tx.commit() if first_commits else tx.rollback())
    if first_commits:
        with pytest.raises(ConcurrencyError) as info:
            await second
        assert info.value.stream_id == s
        assert [e.event() for e in await read_stream(pool, s)] == [
            SampleHappened(n=1),
            SampleHappened(n=2),
        ]
        assert await read_stream(pool, other) == []
    else:
        assert await second == ({s: 2, other: 1} if extra else {s: 2})
        assert [e.event() for e in await read_stream(pool, s)] == [
            SampleHappened(n=1),
            SampleHappened(n=3),
        ]


async def _transaction_of(pool: asyncpg.Pool, streams: list[str]) -> set[str]:
    return {
        r["tx"]
        for r in await pool.fetch(
            "SELECT tx_id::text AS tx FROM events WHERE stream_id = ANY($1::text[])", streams
        )
    }


async def test_append_each_refuses_a_stale_group_alone(pool: asyncpg.Pool) -> None:
    """Group commit: a group whose stream moved is refused whole (its other stream too), as
    `append` would refuse it; every other group is stored, numbered on its own, in the same
    transaction."""
    fresh, moved, beside, loose, busy = (_stream() for _ in range(5))
    for s in (moved, busy):
        await append(pool, [PendingAppend(s, NO_STREAM, [SampleHappened(n=0)])], META)
    results = await append_each(
        pool,
        [
            [PendingAppend(fresh, NO_STREAM, [SampleHappened(n=1), SampleHappened(n=2)])],
            [
                PendingAppend(beside, NO_STREAM, [SampleHappened(n=3)]),
                PendingAppend(moved, NO_STREAM, [SampleHappened(n=4)]),
            ],
            [PendingAppend(loose, ANY_VERSION, [SampleHappened(n=5)])],
            [PendingAppend(busy, 1, [SampleHappened(n=6)])],
        ],
        META,
    )
    assert results[0] == {fresh: 2}
    assert isinstance(results[1], ConcurrencyError)
    assert results[1].stream_id == moved
    assert results[2:] == [{loose: 1}, {busy: 2}]
    assert await read_stream(pool, beside) == []
    assert [e.event() for e in await read_stream(pool, moved)] == [SampleHappened(n=0)]
    assert [(e.version, e.event()) for e in await read_stream(pool, fresh)] == [
        (1, SampleHappened(n=1)),
        (2, SampleHappened(n=2)),
    ]
    assert [e.event() for e in await read_stream(pool, busy)] == [
        SampleHappened(n=0),
        SampleHappened(n=6),
    ]
    assert len(await _transaction_of(pool, [fresh, loose])) == 1


@pytest.mark.parametrize("first_commits", [True, False])
async def test_append_each_checks_versions_after_its_stream_locks(
    pool: asyncpg.Pool, first_commits: bool
) -> None:
    """Group commit waits for its streams' locks before it is given a transaction id, then
    reads the versions: the append it waited for refuses only the group it overtook."""
    s, other = _stream(), _stream()
    await append(pool, [PendingAppend(s, NO_STREAM, [SampleHappened(n=1)])], META)
    async with pool.acquire() as first:
        tx = first.transaction()
        await tx.start()
        await append(first, [PendingAppend(s, 1, [SampleHappened(n=2)])], META)
        second = asyncio.create_task(
            append_each(
                pool,
                [
                    [PendingAppend(s, 1, [SampleHappened(n=3)])],
                    [PendingAppend(other, NO_STREAM, [SampleHappened(n=4)])],
                ],
                META,
            )
        )
        waiting = await _waiting_for_a_stream_lock(pool)
        assert waiting["backend_xid"] is None
        await (tx.commit() if first_commits else tx.rollback())
    mine, theirs = await second
    assert theirs == {other: 1}
    if first_commits:
        assert isinstance(mine, ConcurrencyError)
        assert mine.stream_id == s
    else:
        assert mine == {s: 2}
    assert [e.event() for e in await read_stream(pool, s)] == [
        SampleHappened(n=1),
        SampleHappened(n=2 if first_commits else 3),
    ]


async def test_append_each_must_be_the_first_write_of_its_transaction(pool: asyncpg.Pool) -> None:
    s = _stream()
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="first write"):
            async with conn.transaction():
                await conn.execute("SELECT pg_current_xact_id()")
                await append_each(
                    conn, [[PendingAppend(s, NO_STREAM, [SampleHappened(n=1)])]], META
                )
    assert await read_stream(pool, s) == []


async def _plan_of(conn: asyncpg.Connection, read: Callable[[], Awaitable[object]]) -> str:
    """The plan PostgreSQL makes for the statement `read` sends, with every table read through
    an index if it can be, so the answer does not depend on how many events the table holds."""
    sent: list[asyncpg.connection.LoggedQuery] = []
    conn.add_query_logger(sent.append)
    await read()
    conn.remove_query_logger(sent.append)
    await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
    plan = await conn.fetch("EXPLAIN " + sent[-1].query, *sent[-1].args)
    return "\n".join(row[0] for row in plan)


async def test_reading_the_global_order_walks_the_index_however_far_behind(
    pool: asyncpg.Pool,
) -> None:
    """A reader far behind (a relay after an outage, a rebuild) reads a batch by walking the
    events' primary key from its position and stopping at the limit: sorting everything after
    its position on each read made catching up slower the further behind it was."""
    await append(pool, [PendingAppend(_stream(), ANY_VERSION, [SampleHappened(n=1)])], META)
    async with pool.acquire() as conn:
        for read in (lambda: read_all(conn, START, 10), lambda: head(conn)):
            plan = await _plan_of(conn, read)
            assert "events_pkey" in plan and "Sort" not in plan, plan
