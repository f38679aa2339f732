"""Event schema versions on the real event store and NATS: an event stored in an older shape is
read as its type's current shape by every reader (a stream read, a registration read, the relay
and a projector, a rebuild), and the appends store the version each event was written in."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import ClassVar

import asyncpg
import msgspec
import pytest

from domain import upcasting
from domain.events import Event
from infra.eventstore import (
    NO_STREAM,
    Metadata,
    PendingAppend,
    RecordedEvent,
    append,
    first_event_data,
    read_stream,
)
from infra.settings import Settings
from infra.supervise import stop_tasks
from projections.framework import live_schema
from projections.rebuild import rebuild
from services.workers.projector import Projector
from services.workers.relay import Relay

META = Metadata(actor="test")


class GateCounted(Event, frozen=True):
    """Version 1 was `{"count": n}`; version 2 names the gate."""

    schema_version: ClassVar[int] = 2
    visitors: int
    gate: str


class GateProjection:
    """Visitors per gate: shows the data of every event, old or new, as the current shape."""

    name: ClassVar[str] = "gate_counts"
    categories: ClassVar[tuple[str, ...]] = ("gatecount",)
    tables_sql: ClassVar[str] = (
        "CREATE TABLE {schema}.gates (gate text PRIMARY KEY, visitors bigint NOT NULL)"
    )

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        counted = event.event()
        assert isinstance(counted, GateCounted)
        await conn.execute(
            f"INSERT INTO {schema}.gates VALUES ($1, $2) ON CONFLICT (gate)"
            " DO UPDATE SET visitors = gates.visitors + EXCLUDED.visitors",
            counted.gate,
            counted.visitors,
        )


TABLE = f"{live_schema(GateProjection())}.gates"


@pytest.fixture
def upcasters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as it would be once GateCounted moved to version 2."""
    registry = upcasting.Upcasters()
    registry.register("GateCounted", 1, lambda raw: {"visitors": raw["count"], "gate": "main"})
    monkeypatch.setattr(upcasting, "UPCASTERS", registry)


async def _append_first_version(pool: asyncpg.Pool, stream: str, count: int) -> None:
    """A GateCounted as code before version 2 stored it, through the store's own function."""
    await pool.execute(
        "SELECT append_events($1, $2, $3, $4, $5, $6::jsonb[], $7, $8)",
        [stream],
        [NO_STREAM],
        [uuid.uuid4()],
        [stream],
        ["GateCounted"],
        [f'{{"count": {count}}}'],
        ["{}"],
        [1],
    )


async def _gates(pool: asyncpg.Pool) -> dict[str, int]:
    with contextlib.suppress(asyncpg.UndefinedTableError):
        return {r["gate"]: r["visitors"] for r in await pool.fetch(f"SELECT * FROM {TABLE}")}
    return {}


async def test_an_old_event_is_read_as_the_current_shape_everywhere(
    pool: asyncpg.Pool, js, settings: Settings, upcasters: None
) -> None:
    run = uuid.uuid4().hex[:8]
    stream, beside = f"gatecount-{run}a", f"gatecount-{run}b"
    await _append_first_version(pool, stream, 5)
    await append(pool, [PendingAppend(stream, 1, [GateCounted(visitors=3, gate="north")])], META)
    # Several streams at once go through append_events, which stores the versions too.
    await append(
        pool,
        [
            PendingAppend(stream, 2, [GateCounted(visitors=1, gate="north")]),
            PendingAppend(beside, NO_STREAM, [GateCounted(visitors=2, gate="main")]),
        ],
        META,
    )

    recorded = await read_stream(pool, stream)
    assert [r.schema_version for r in recorded] == [1, 2, 2]
    assert [r.event() for r in recorded] == [
        GateCounted(visitors=5, gate="main"),
        GateCounted(visitors=3, gate="north"),
        GateCounted(visitors=1, gate="north"),
    ]
    assert (await read_stream(pool, beside))[0].schema_version == 2

    expected = {"main": 7, "north": 4}
    relay = Relay(pool, js, settings, name=f"versions-{run}")
    projector = Projector(pool, js, settings, GateProjection(), batch_size=10)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(projector.run())]
    try:
        async with asyncio.timeout(30):
            while await _gates(pool) != expected:
                await asyncio.sleep(0.05)
    finally:
        await stop_tasks(tasks)

    await pool.execute(f"DELETE FROM {TABLE}")
    await rebuild(pool, GateProjection())
    assert await _gates(pool) == expected


async def test_a_registration_read_alone_is_upcast(pool: asyncpg.Pool, upcasters: None) -> None:
    """The catalog cache reads a stream's first event without the rest, as raw data."""
    stream = f"gatecheck-{uuid.uuid4().hex[:8]}"
    await _append_first_version(pool, stream, 9)
    data = await first_event_data(pool, stream, "GateCounted")
    assert data is not None
    assert msgspec.json.decode(data, type=GateCounted) == GateCounted(visitors=9, gate="main")
