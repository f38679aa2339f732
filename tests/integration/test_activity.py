"""The partner API activity log against a real PostgreSQL: recording is a buffer append (no
write on the request path), flushes write in batches, and nothing older than 7 days is kept or
shown."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.api.activity import ActivityEntry, ActivityLog, recent_activity

_organizations = itertools.count(9_000_000_001)


@pytest.fixture
def organization_id() -> int:
    """An organization id no other test writes activity for."""
    return next(_organizations)


def _entry(
    organization_id: int | None,
    *,
    ago: timedelta = timedelta(0),
    key: int | None = 1,
    path: str = "/api/v1/events",
    status: int = 200,
    request_id: str = "req",
) -> ActivityEntry:
    return ActivityEntry(
        recorded_at=datetime.now(UTC) - ago,
        organization_id=organization_id,
        api_key_id=key,
        method="GET",
        path=path,
        status=status,
        duration_ms=3.25,
        request_id=request_id,
        remote="203.0.113.7",
    )


async def _stored(pool: asyncpg.Pool, organization_id: int) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM api_activity WHERE organization_id = $1", organization_id
    )


async def test_recording_writes_nothing_until_a_flush(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool)
    entry = _entry(organization_id, request_id="req-one", status=404)
    log.record(entry)
    assert log.pending == 1
    assert await _stored(pool, organization_id) == 0

    assert await log.flush() == 1
    assert log.pending == 0
    assert await recent_activity(pool, organization_id) == [entry]
    assert await log.flush() == 0


async def test_a_large_burst_is_written_in_batches(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool, batch_size=300)
    for n in range(2_000):
        log.record(_entry(organization_id, ago=timedelta(seconds=n), request_id=f"req-{n}"))
    assert await log.flush() == 2_000
    assert await _stored(pool, organization_id) == 2_000

    newest = await recent_activity(pool, organization_id, limit=5)
    assert [e.request_id for e in newest] == [f"req-{n}" for n in range(5)]
    assert len(await recent_activity(pool, organization_id, limit=5_000)) == 2_000


async def test_the_background_task_flushes_and_a_final_flush_follows_cancellation(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool, flush_interval=0.05)
    task = asyncio.create_task(log.run())
    try:
        log.record(_entry(organization_id, request_id="by-the-task"))
        for _ in range(100):
            if await _stored(pool, organization_id) == 1:
                break
            await asyncio.sleep(0.05)
        assert await _stored(pool, organization_id) == 1
        log.record(_entry(organization_id, request_id="at-shutdown"))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await log.close()
    assert {e.request_id for e in await recent_activity(pool, organization_id)} == {
        "by-the-task",
        "at-shutdown",
    }


async def test_the_buffer_is_bounded_and_drops_the_oldest(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool, max_pending=10)
    for n in range(25):
        log.record(_entry(organization_id, ago=timedelta(seconds=100 - n), request_id=f"r{n}"))
    assert log.pending == 10
    await log.flush()
    kept = await recent_activity(pool, organization_id)
    assert [e.request_id for e in kept] == [f"r{n}" for n in range(24, 14, -1)]


async def test_rows_older_than_seven_days_are_purged_and_never_listed(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool)
    log.record(_entry(organization_id, ago=timedelta(days=8), request_id="expired"))
    log.record(_entry(organization_id, ago=timedelta(days=7, minutes=1), request_id="just-gone"))
    log.record(_entry(organization_id, ago=timedelta(days=6, hours=23), request_id="kept"))
    await log.flush()
    assert await _stored(pool, organization_id) == 3

    # Listed only within the retention, even before the purge has run.
    assert [e.request_id for e in await recent_activity(pool, organization_id)] == ["kept"]

    assert await log.purge() >= 2
    assert await _stored(pool, organization_id) == 1
    assert [e.request_id for e in await recent_activity(pool, organization_id)] == ["kept"]


async def test_the_background_task_purges_at_start(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool, flush_interval=0.05)
    log.record(_entry(organization_id, ago=timedelta(days=9), request_id="expired"))
    await log.flush()
    task = asyncio.create_task(log.run())
    try:
        for _ in range(100):
            if await _stored(pool, organization_id) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _stored(pool, organization_id) == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_filter_by_key_and_since(pool: asyncpg.Pool, organization_id: int) -> None:
    log = ActivityLog(pool)
    log.record(_entry(organization_id, key=11, ago=timedelta(hours=3), request_id="k11-old"))
    log.record(_entry(organization_id, key=11, ago=timedelta(minutes=5), request_id="k11-new"))
    log.record(_entry(organization_id, key=12, ago=timedelta(minutes=1), request_id="k12-new"))
    log.record(_entry(organization_id, key=None, status=401, request_id="no-key"))
    await log.flush()

    def ids(entries: list[ActivityEntry]) -> list[str]:
        return [e.request_id for e in entries]

    assert ids(await recent_activity(pool, organization_id)) == [
        "no-key",
        "k12-new",
        "k11-new",
        "k11-old",
    ]
    assert ids(await recent_activity(pool, organization_id, api_key_id=11)) == [
        "k11-new",
        "k11-old",
    ]
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert ids(await recent_activity(pool, organization_id, since=hour_ago)) == [
        "no-key",
        "k12-new",
        "k11-new",
    ]
    assert ids(await recent_activity(pool, organization_id, api_key_id=11, since=hour_ago)) == [
        "k11-new"
    ]
    naive_hour_ago = hour_ago.replace(tzinfo=None)
    assert len(await recent_activity(pool, organization_id, since=naive_hour_ago)) == 3
    assert ids(await recent_activity(pool, organization_id, limit=2)) == ["no-key", "k12-new"]


async def test_an_organization_sees_only_its_own_calls(pool: asyncpg.Pool) -> None:
    ours, theirs = next(_organizations), next(_organizations)
    log = ActivityLog(pool)
    log.record(_entry(ours, key=21, request_id="ours"))
    log.record(_entry(theirs, key=22, request_id="theirs"))
    log.record(_entry(None, key=None, status=401, request_id="unauthenticated"))
    await log.flush()

    assert [e.request_id for e in await recent_activity(pool, ours)] == ["ours"]
    assert [e.request_id for e in await recent_activity(pool, theirs)] == ["theirs"]
    # Another organization's key id does not widen the view.
    assert await recent_activity(pool, ours, api_key_id=22) == []
