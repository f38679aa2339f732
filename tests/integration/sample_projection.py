"""A small read model used to exercise the projector framework on its own."""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from domain.events import Event
from infra.eventstore import RecordedEvent


class TallyCounted(Event, frozen=True):
    amount: int


class TallyNoted(Event, frozen=True):
    """An event of the tally streams that no tally counts."""

    note: str


class TallyProjection:
    """Per stream: the sum of amounts and the versions seen, so a double apply or a gap shows."""

    name: ClassVar[str] = "tally"
    categories: ClassVar[tuple[str, ...]] = ("tally",)
    tables_sql: ClassVar[str] = (
        "CREATE TABLE {schema}.tallies (stream_id text PRIMARY KEY, total bigint NOT NULL,"
        " versions integer[] NOT NULL)"
    )

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        counted = event.event()
        assert isinstance(counted, TallyCounted)
        await conn.execute(
            f"INSERT INTO {schema}.tallies VALUES ($1, $2, ARRAY[$3::int])"
            " ON CONFLICT (stream_id) DO UPDATE SET total = tallies.total + EXCLUDED.total,"
            " versions = tallies.versions || EXCLUDED.versions",
            event.stream_id,
            counted.amount,
            event.version,
        )


class CountedOnlyProjection(TallyProjection):
    """The tallies again, of streams of their own, naming the one event type that changes
    them."""

    name: ClassVar[str] = "tally_counted"
    categories: ClassVar[tuple[str, ...]] = ("counted",)
    handles: ClassVar[frozenset[str]] = frozenset({"TallyCounted"})

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        if event.type in self.handles:
            await super().apply(conn, schema, event)
