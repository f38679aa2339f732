"""Snapshots of long streams (infra/snapshots.py) on the real event store: a desk that starts cold
from a snapshot holds and decides exactly what one folding the whole stream does; a snapshot
the stream does not vouch for (past its end, taken on other events, another state schema) is
ignored; and a snapshot that cannot be written never fails or holds up a sale."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import pytest
import structlog

from domain.catalog import AttractionOpened
from domain.inventory import attraction_days, holds
from domain.inventory.events import AttractionTicketsHeld
from domain.sale_commands import Decision
from infra import snapshots
from infra.eventstore import Metadata, read_stream
from services.usecases.desk import Desk
from tests.integration.desk_commands import EXPIRES, PLAIN_COMMANDS, hold_one

META = Metadata(request_id="snapshot-test", actor="test")
EVERY = 10
CODEC = snapshots.EventInventoryCodec()


def _new_stream() -> tuple[int, str]:
    event_id = random.randint(10**8, 10**9)
    return event_id, f"event-{event_id}"


async def _sell(pool: asyncpg.Pool, event_id: int, stream: str, seats: range) -> Desk:
    """A desk that has held `seats` one append each, then given the first one back."""
    desk = Desk(pool, stream, PLAIN_COMMANDS, snapshot_every=EVERY)
    for n in seats:
        await desk.submit(hold_one(event_id, stream, n), META)
    token = desk.cached.state.taken[(1, "A", seats[0])]
    await desk.submit(
        lambda state: Decision(events={stream: holds.release_seats(state, token, "expired")}),
        META,
    )
    return desk


async def _snapshot_at_least(pool: asyncpg.Pool, stream: str, version: int) -> int:
    """The stored snapshot's version once it is at least `version` (written in the background)."""
    async with asyncio.timeout(30):
        while True:
            found = await snapshots.load(pool, stream, CODEC)
            if found is not None and found.version >= version:
                return found.version
            await asyncio.sleep(0.02)


async def _folded(pool: asyncpg.Pool, stream: str) -> holds.EventInventory:
    """The stream folded from its first event: what a desk without snapshots holds."""
    state = holds.EventInventory()
    for recorded in await read_stream(pool, stream):
        state = holds.evolve_inventory(state, recorded.event())
    return state


async def _cold(pool: asyncpg.Pool, stream: str) -> Desk:
    desk = Desk(pool, stream, PLAIN_COMMANDS, snapshot_every=EVERY)
    await desk.ready()
    return desk


async def test_a_cold_desk_from_a_snapshot_decides_as_one_folding_the_stream(
    pool: asyncpg.Pool,
) -> None:
    event_id, stream = _new_stream()
    seller = await _sell(pool, event_id, stream, range(1, 26))
    # Closing a desk cancels a snapshot still being written: wait for it first.
    taken_at = await _snapshot_at_least(pool, stream, 20)
    await seller.close()
    # Events after the snapshot, which the cold desk must read on top of it.
    other = Desk(pool, stream, PLAIN_COMMANDS, snapshot_every=1000)
    await other.submit(hold_one(event_id, stream, 40), META)
    await other.close()

    cold = await _cold(pool, stream)
    assert cold.snapshots.started_from == taken_at > 0
    assert cold.cached.version == len(await read_stream(pool, stream))
    assert cold.cached.state == await _folded(pool, stream)

    with pytest.raises(holds.SeatsTaken):
        await cold.submit(hold_one(event_id, stream, 40), META)
    with pytest.raises(holds.SeatsTaken):
        await cold.submit(hold_one(event_id, stream, 2), META)
    assert await cold.submit(hold_one(event_id, stream, 1), META) is not None  # given back
    await cold.close()


async def test_a_snapshot_the_stream_does_not_vouch_for_is_ignored(pool: asyncpg.Pool) -> None:
    event_id, long_stream = _new_stream()
    seller = await _sell(pool, event_id, long_stream, range(1, 26))
    version = await _snapshot_at_least(pool, long_stream, 20)
    await seller.close()
    row = await pool.fetchrow("SELECT * FROM snapshots WHERE stream_id = $1", long_stream)

    # Past the stream's end: the same snapshot under a stream with fewer events.
    short_id, short = _new_stream()
    await (await _sell(pool, short_id, short, range(1, 4))).close()
    # Taken on other events: a stream as long as the snapshot's version, with other seats.
    other_id, other = _new_stream()
    await (await _sell(pool, other_id, other, range(50, 50 + version))).close()
    for stream in (short, other):
        await pool.execute(
            "INSERT INTO snapshots (stream_id, state_schema, version, event_id, data)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream_id, state_schema) DO UPDATE"
            " SET version = EXCLUDED.version, event_id = EXCLUDED.event_id, data = EXCLUDED.data",
            stream,
            row["state_schema"],
            row["version"],
            row["event_id"],
            row["data"],
        )
        cold = await _cold(pool, stream)
        assert cold.snapshots.started_from == 0
        assert cold.cached.state == await _folded(pool, stream)
        await cold.close()

    # Written by code whose state schema differs from this code's.
    await pool.execute(
        "UPDATE snapshots SET state_schema = $2 WHERE stream_id = $1", long_stream, CODEC.schema + 1
    )
    cold = await _cold(pool, long_stream)
    assert cold.snapshots.started_from == 0
    assert cold.cached.state == await _folded(pool, long_stream)
    await cold.close()

    # In this code's schema but not decodable by it (instead of the one the last desk wrote).
    await pool.execute(
        "DELETE FROM snapshots WHERE stream_id = $1 AND state_schema = $2",
        long_stream,
        CODEC.schema,
    )
    await pool.execute(
        "UPDATE snapshots SET state_schema = $2, data = '{\"holds\": 1}' WHERE stream_id = $1",
        long_stream,
        CODEC.schema,
    )
    with structlog.testing.capture_logs() as logs:
        cold = await _cold(pool, long_stream)
    assert [line["event"] for line in logs] == ["snapshot_unreadable"]
    assert cold.snapshots.started_from == 0
    assert cold.cached.state == await _folded(pool, long_stream)
    await cold.close()


@pytest.fixture
async def refused_snapshots(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A stream whose snapshots the database refuses (a check constraint naming it)."""
    _, stream = _new_stream()
    await pool.execute(
        f"ALTER TABLE snapshots ADD CONSTRAINT refuse_test CHECK (stream_id <> '{stream}')"
    )
    try:
        yield stream
    finally:
        await pool.execute("ALTER TABLE snapshots DROP CONSTRAINT refuse_test")


async def test_a_snapshot_that_cannot_be_written_fails_no_sale(
    pool: asyncpg.Pool, refused_snapshots: str
) -> None:
    stream = refused_snapshots
    event_id = int(stream.split("-")[1])
    with structlog.testing.capture_logs() as logs:
        desk = await _sell(pool, event_id, stream, range(1, 3 * EVERY))
        async with asyncio.timeout(30):
            while not any(line["event"] == "snapshot_write_failed" for line in logs):
                await asyncio.sleep(0.02)
    assert desk.cached.version == 3 * EVERY
    assert len(await read_stream(pool, stream)) == 3 * EVERY
    assert await pool.fetchval("SELECT count(*) FROM snapshots WHERE stream_id = $1", stream) == 0
    assert await desk.submit(hold_one(event_id, stream, 1), META) is not None
    await desk.close()


async def test_a_blocked_snapshot_write_holds_up_no_sale(pool: asyncpg.Pool) -> None:
    event_id, stream = _new_stream()
    desk = Desk(pool, stream, PLAIN_COMMANDS, snapshot_every=EVERY)
    await desk.ready()
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")
        async with asyncio.timeout(30):
            for n in range(1, 2 * EVERY + 1):
                await desk.submit(hold_one(event_id, stream, n), META)
        assert len(await read_stream(pool, stream)) == 2 * EVERY
    await _snapshot_at_least(pool, stream, EVERY)
    await desk.close()


def test_an_attraction_inventory_survives_its_snapshot() -> None:
    opened = AttractionOpened(
        attraction_id=5,
        organization_id=1,
        venue_id=2,
        slug="museum",
        name="Museum",
        description=None,
        visit_date_required=True,
        daily_max_tickets=100,
        opening_hours={},
        ticket_types=[],
    )
    state = attraction_days.AttractionInventory(opened=opened)
    held = AttractionTicketsHeld(
        attraction_id=5,
        purchase_token="t1",
        visit_date=date(2026, 12, 24),
        counts={3: 2},
        expires_at=EXPIRES,
    )
    state = attraction_days.evolve_attraction(state, held)
    codec = snapshots.AttractionInventoryCodec()
    assert codec.decode(codec.encode(state)) == state
