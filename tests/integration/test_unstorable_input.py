"""One bad row never fails anyone else: a command whose events the database refuses (here a NUL
character, which PostgreSQL's jsonb and text cannot hold) fails alone, while the commands
batched with it are stored; the activity log neither stalls on such a row nor loses the
others."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from domain.purchasing import PaymentIntentCreated
from infra.append_batcher import AppendBatcher
from infra.eventstore import NO_STREAM, Metadata, PendingAppend, read_stream
from services.api.activity import ActivityEntry, ActivityLog, recent_activity
from services.usecases.desk import Desk
from tests.integration.desk_commands import PLAIN_COMMANDS, hold_one

META = Metadata(request_id="unstorable-test", actor="test")
BUYERS = 8
BAD = 3  # the buyer whose events carry a NUL
_organizations = itertools.count(9_100_000_001)


async def test_a_command_the_database_refuses_fails_alone_in_its_desk_batch(
    pool: asyncpg.Pool,
) -> None:
    event_id = random.randint(10**8, 10**9)
    stream = f"event-{event_id}"
    desk = Desk(pool, stream, PLAIN_COMMANDS)
    await desk.ready()
    tokens = [f"tok-{n}" if n != BAD else "tok-\x00-bad" for n in range(BUYERS)]

    # Submitted in one go, so they queue before the desk's worker runs: one batch, one append.
    results = await asyncio.gather(
        *(desk.submit(hold_one(event_id, stream, n + 1, tokens[n]), META) for n in range(BUYERS)),
        return_exceptions=True,
    )

    assert isinstance(results[BAD], asyncpg.PostgresError)
    good = [tokens[n] for n in range(BUYERS) if n != BAD]
    assert [r for n, r in enumerate(results) if n != BAD] == good
    stored = [r.event() for r in await read_stream(pool, stream)]
    assert sorted(e.purchase_token for e in stored) == sorted(good)
    # The desk goes on selling on a state that holds exactly what was stored.
    after = await desk.submit(hold_one(event_id, stream, BAD + 1, "tok-retry"), META)
    assert after == "tok-retry"
    assert len(desk.cached.state.taken) == BUYERS
    await desk.close()


async def test_an_append_the_database_refuses_fails_alone_in_its_group_commit(
    pool: asyncpg.Pool,
) -> None:
    batcher = AppendBatcher(pool)
    streams = [f"purchase-{uuid.uuid4().hex}" for _ in range(BUYERS)]

    def intent(n: int) -> PaymentIntentCreated:
        secret = f"cs_{n}" if n != BAD else "cs_\x00"
        return PaymentIntentCreated(token=f"tok-{n}", intent_id=f"pi_{n}", client_secret=secret)

    results = await asyncio.gather(
        *(
            batcher.append([PendingAppend(s, NO_STREAM, [intent(n)])], META)
            for n, s in enumerate(streams)
        ),
        return_exceptions=True,
    )
    await batcher.close()

    assert isinstance(results[BAD], asyncpg.PostgresError)
    for n, stream in enumerate(streams):
        if n != BAD:
            assert results[n] == {stream: 1}
            [stored] = await read_stream(pool, stream)
            assert stored.event() == intent(n)
    assert await read_stream(pool, streams[BAD]) == []


def _entry(organization_id: int, n: int, *, path: str = "/api/v1/events", status: int = 200):
    return ActivityEntry(
        recorded_at=datetime.now(UTC),
        organization_id=organization_id,
        api_key_id=None,
        method="GET",
        path=path,
        status=status,
        duration_ms=1.0,
        request_id=f"req-{n}",
        remote="127.0.0.1",
    )


@pytest.fixture
def organization_id() -> int:
    return next(_organizations)


async def test_a_nul_in_a_path_is_recorded_and_never_stalls_the_activity_log(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool)
    log.record(_entry(organization_id, 0))
    log.record(_entry(organization_id, 1, path="/api/v1/events/ham\x00let"))
    log.record(_entry(organization_id, 2))

    assert await log.flush() == 3
    assert log.pending == 0
    paths = {e.request_id: e.path for e in await recent_activity(pool, organization_id)}
    assert paths == {
        "req-0": "/api/v1/events",
        "req-1": "/api/v1/events/ham\ufffdlet",
        "req-2": "/api/v1/events",
    }
    log.record(_entry(organization_id, 3))
    assert await log.flush() == 1


async def test_a_row_the_database_refuses_is_dropped_alone(
    pool: asyncpg.Pool, organization_id: int
) -> None:
    log = ActivityLog(pool, batch_size=50)
    for n in range(20):
        # status is a smallint column: one row no sanitizing can make fit
        log.record(_entry(organization_id, n, status=70_000 if n == 7 else 200))

    await log.flush()

    assert log.pending == 0
    written = {e.request_id for e in await recent_activity(pool, organization_id)}
    assert written == {f"req-{n}" for n in range(20) if n != 7}
    log.record(_entry(organization_id, 99))
    assert await log.flush() == 1
