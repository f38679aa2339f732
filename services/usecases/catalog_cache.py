"""The catalog as purchases need it, read once per process: organizations, venues, events
as scheduled, attractions as opened and who claimed a slug or code. No event changes them after
registration (a claim is never withdrawn), so a cache without expiry is exact; but a venue's
plan: a venue is kept only while the catalog read model's change feed has not moved (the
projection applies a plan change after it is stored, so the re-read sees it).

Concurrent misses for one entry share one read: when an on-sale opens, the first few hundred
buyers all miss at the same moment, and a read each would queue them all for connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec

from domain import catalog, streams, tickets, venues
from domain.errors import NotFound
from domain.purchasing import PurchaseOpened
from infra.changes import ChangeFeed
from infra.eventstore import first_event_data, read_stream
from services.usecases import catalog_commands

T = TypeVar("T")
_scheduled = msgspec.json.Decoder(catalog.EventScheduled)
_attraction = msgspec.json.Decoder(catalog.AttractionOpened)


class Catalog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._known: dict[tuple[str, object], Any] = {}
        self._reading: dict[tuple[object, ...], asyncio.Task[Any]] = {}
        self._venues: dict[int, tuple[int, venues.VenueRegistered]] = {}
        self._changes: ChangeFeed | None = None
        self._channel = ""

    def follow(self, changes: ChangeFeed, channel: str) -> None:
        """Keep venues while `channel` (the catalog read model's) does not move; without a
        feed, or while it is not listening, a venue is read each time."""
        self._changes, self._channel = changes, channel

    async def _once(self, key: tuple[str, object], read: Callable[[], Awaitable[T]]) -> T:
        """The entry, read at most once at a time; only a found entry (not None) is kept, so
        memory stays bounded by what exists, whatever slugs and codes callers try."""
        if key in self._known:
            return self._known[key]  # type: ignore[no-any-return]
        value = await self._shared(key, read)
        if value is not None:
            self._known[key] = value
        return value

    async def _shared(self, key: tuple[object, ...], read: Callable[[], Awaitable[T]]) -> T:
        """One read at a time per key: concurrent misses wait for the same one."""
        task = self._reading.get(key)
        if task is None:
            task = self._reading[key] = asyncio.ensure_future(read())
            task.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(task)

    async def owner(self, claim: str) -> int | None:
        """The id that won a natural key, or None while nobody has claimed it."""
        return await self._once(
            ("owner", claim), lambda: catalog_commands.owner_of(self.pool, claim)
        )

    async def organization(self, organization_id: int) -> catalog.OrganizationRegistered:
        return await self._once(
            ("organization", organization_id), lambda: self._organization(organization_id)
        )

    async def _organization(self, organization_id: int) -> catalog.OrganizationRegistered:
        events = await read_stream(self.pool, streams.organization(organization_id))
        registered = events[0].event()
        assert isinstance(registered, catalog.OrganizationRegistered)
        return registered

    async def scheduled(self, event_id: int) -> catalog.EventScheduled:
        """The event as scheduled (dates, venue): its stream's first event."""
        scheduled = await self._once(
            ("event", event_id),
            lambda: self._first(streams.event(event_id), "EventScheduled", _scheduled),
        )
        if scheduled is None:
            raise NotFound("event not found", "event_slug")
        return scheduled

    async def schedule(self, opened: PurchaseOpened) -> tickets.Schedule:
        """When the purchased product's tickets are good, and its event's terms."""
        if opened.event_id is not None:
            return tickets.event_schedule(await self.scheduled(opened.event_id))
        zone = (await self.organization(opened.organization_id)).timezone
        return tickets.visit_schedule(opened.visit_date, zone)

    async def venue(self, venue_id: int) -> venues.VenueRegistered:
        """The venue with its current plan. The generation is taken before the read: a change
        during it moves the generation again, so the entry is read once more."""
        generation = None if self._changes is None else self._changes.generation(self._channel)
        kept = self._venues.get(venue_id)
        if generation is not None and kept is not None and kept[0] == generation:
            return kept[1]
        venue = await self._shared(
            ("venue", venue_id, generation),
            lambda: catalog_commands.load_venue(self.pool, venue_id),
        )
        if generation is not None:
            self._venues[venue_id] = (generation, venue)
        return venue

    async def sections_of_event(self, event_id: int) -> list[venues.Section]:
        return (await self.venue((await self.scheduled(event_id)).venue_id)).sections

    async def attraction(self, attraction_id: int) -> catalog.AttractionOpened:
        opened = await self._once(
            ("attraction", attraction_id),
            lambda: self._first(streams.attraction(attraction_id), "AttractionOpened", _attraction),
        )
        if opened is None:
            raise NotFound("attraction not found", "attraction_slug")
        return opened

    async def _first(
        self, stream_id: str, event_type: str, decoder: msgspec.json.Decoder[T]
    ) -> T | None:
        """A stream's first event when it is of `event_type` (the registration)."""
        data = await first_event_data(self.pool, stream_id, event_type)
        return None if data is None else decoder.decode(data)
