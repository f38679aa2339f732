"""Snapshots of long streams: an on-sale event's inventory stream holds one event per purchase,
so a sales desk that starts cold (a new gateway, the sweeper, a desk after a failure) would fold
100,000 events before deciding anything. A desk stores its folded state every SNAPSHOT_EVERY
events and a cold one starts from the latest snapshot and reads only the events after it.

A snapshot is a cache, never the truth: it is used only while the stream's event at its version
is the one it was taken after (a stream shorter than the snapshot, or another store's, is folded
from the start), and only with the state schema it was written in. A codec's `schema` must be
raised whenever what it stores changes: the state's fields, what an evolve function does with
an event, or the shape of an event type the state keeps (SeatsHeld, EventScheduled, ...)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, Protocol, TypeVar

import asyncpg
import msgspec

from domain.catalog import AttractionOpened, EventListing
from domain.inventory.attraction_days import AttractionInventory
from domain.inventory.events import AttractionTicketsHeld, SeatsHeld
from domain.inventory.holds import EventInventory

SNAPSHOT_EVERY = 500

S = TypeVar("S")


class Codec(Protocol[S]):
    """How one aggregate's state is stored in a snapshot, and the schema of that form."""

    schema: int

    def encode(self, state: S) -> bytes: ...

    def decode(self, data: bytes | str) -> S: ...


@dataclass(frozen=True)
class Snapshot(Generic[S]):
    state: S
    version: int


class _EventInventoryData(msgspec.Struct, frozen=True):
    """EventInventory with its tuple keys spelled out, as JSON objects only take string keys."""

    listing: EventListing | None
    taken: list[tuple[int, str, int, str]]
    taken_per_type: dict[int, int]
    holds: dict[str, SeatsHeld]
    taken_by_row: list[tuple[int, str, list[int]]]


class EventInventoryCodec:
    schema = 1
    _decoder = msgspec.json.Decoder(_EventInventoryData)

    def encode(self, state: EventInventory) -> bytes:
        return msgspec.json.encode(
            _EventInventoryData(
                listing=state.listing,
                taken=[(s, r, n, token) for (s, r, n), token in state.taken.items()],
                taken_per_type=dict(state.taken_per_type),
                holds=state.holds,
                taken_by_row=[(s, r, sorted(ns)) for (s, r), ns in state.taken_by_row.items()],
            )
        )

    def decode(self, data: bytes | str) -> EventInventory:
        stored = self._decoder.decode(data)
        return EventInventory(
            listing=stored.listing,
            taken={(s, r, n): token for s, r, n, token in stored.taken},
            taken_per_type=Counter(stored.taken_per_type),
            holds=stored.holds,
            taken_by_row={(s, r): set(ns) for s, r, ns in stored.taken_by_row},
        )


class _AttractionInventoryData(msgspec.Struct, frozen=True):
    opened: AttractionOpened | None
    taken_per_type: dict[int, int]
    taken_per_day: dict[date, int]
    holds: dict[str, AttractionTicketsHeld]


class AttractionInventoryCodec:
    schema = 1
    _decoder = msgspec.json.Decoder(_AttractionInventoryData)

    def encode(self, state: AttractionInventory) -> bytes:
        return msgspec.json.encode(
            _AttractionInventoryData(
                opened=state.opened,
                taken_per_type=dict(state.taken_per_type),
                taken_per_day=dict(state.taken_per_day),
                holds=state.holds,
            )
        )

    def decode(self, data: bytes | str) -> AttractionInventory:
        stored = self._decoder.decode(data)
        return AttractionInventory(
            opened=stored.opened,
            taken_per_type=Counter(stored.taken_per_type),
            taken_per_day=Counter(stored.taken_per_day),
            holds=stored.holds,
        )


_CODECS: dict[type, Codec[Any]] = {
    EventInventory: EventInventoryCodec(),
    AttractionInventory: AttractionInventoryCodec(),
}


def codec_for(state: S) -> Codec[S] | None:
    """The codec of states like `state`; None for aggregates whose streams stay short."""
    return _CODECS.get(type(state))


_LOAD = """
SELECT s.version, s.data::text FROM snapshots s
JOIN events e ON e.stream_id = s.stream_id AND e.version = s.version AND e.event_id = s.event_id
WHERE s.stream_id = $1 AND s.state_schema = $2
"""

# Taken after the event the stream has at `version`; an older snapshot never replaces a newer one.
_SAVE = """
INSERT INTO snapshots (stream_id, state_schema, version, event_id, data)
SELECT $1, $2, $3, e.event_id, $4::jsonb FROM events e WHERE e.stream_id = $1 AND e.version = $3
ON CONFLICT (stream_id, state_schema) DO UPDATE
SET version = EXCLUDED.version, event_id = EXCLUDED.event_id, data = EXCLUDED.data,
    taken_at = EXCLUDED.taken_at
WHERE snapshots.version < EXCLUDED.version
"""


async def load(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str, codec: Codec[S]
) -> Snapshot[S] | None:
    """The latest snapshot of the stream in the codec's schema, if the stream still has the
    event it was taken after."""
    row = await conn.fetchrow(_LOAD, stream_id, codec.schema)
    return None if row is None else Snapshot(codec.decode(row["data"]), row["version"])


async def save(
    conn: asyncpg.Connection | asyncpg.Pool,
    stream_id: str,
    version: int,
    data: bytes,
    codec: Codec[Any],
) -> None:
    """Store `data` (the codec's encoding of the state folded up to `version`)."""
    await conn.execute(_SAVE, stream_id, codec.schema, version, data.decode())
