"""The immutable parts of the catalog, read once per process: organizations, venues, events
as scheduled, attractions as opened and who claimed a slug or code. No event changes them after
registration (a claim is never withdrawn), so a cache without expiry is exact."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from domain import catalog
from domain.errors import NotFound
from domain.purchasing import PurchaseOpened
from infra.eventstore import read_stream
from services import catalog_commands

_scheduled = msgspec.json.Decoder(catalog.EventScheduled)
_attraction = msgspec.json.Decoder(catalog.AttractionOpened)


class Catalog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._organizations: dict[int, catalog.OrganizationRegistered] = {}
        self._venues: dict[int, catalog.VenueRegistered] = {}
        self._schedules: dict[int, catalog.EventScheduled] = {}
        self._attractions: dict[int, catalog.AttractionOpened] = {}
        self._owners: dict[str, int] = {}

    async def owner(self, claim: str) -> int | None:
        """The id that won a natural key; only a found owner is kept, so memory stays bounded
        by what exists, whatever codes buyers try."""
        owner = self._owners.get(claim)
        if owner is None:
            owner = await catalog_commands.owner_of(self.pool, claim)
            if owner is not None:
                self._owners[claim] = owner
        return owner

    async def organization(self, organization_id: int) -> catalog.OrganizationRegistered:
        if organization_id not in self._organizations:
            events = await read_stream(self.pool, catalog.organization_stream(organization_id))
            registered = events[0].event()
            assert isinstance(registered, catalog.OrganizationRegistered)
            self._organizations[organization_id] = registered
        return self._organizations[organization_id]

    async def scheduled(self, event_id: int) -> catalog.EventScheduled:
        """The event as scheduled (dates, venue): its stream's first event."""
        if event_id not in self._schedules:
            data = await self.pool.fetchval(
                "SELECT data::text FROM events WHERE stream_id = $1 AND version = 1"
                " AND type = 'EventScheduled'",
                catalog.event_stream(event_id),
            )
            if data is None:
                raise NotFound("event not found", "event_slug")
            self._schedules[event_id] = _scheduled.decode(data)
        return self._schedules[event_id]

    async def times(self, opened: PurchaseOpened) -> tuple[datetime | None, datetime | None]:
        if opened.event_id is None:
            return None, None
        scheduled = await self.scheduled(opened.event_id)
        return scheduled.event_date, scheduled.event_end_date

    async def venue(self, venue_id: int) -> catalog.VenueRegistered:
        if venue_id not in self._venues:
            self._venues[venue_id] = await catalog_commands.load_venue(self.pool, venue_id)
        return self._venues[venue_id]

    async def sections_of_event(self, event_id: int) -> list[catalog.Section]:
        return (await self.venue((await self.scheduled(event_id)).venue_id)).sections

    async def attraction(self, attraction_id: int) -> catalog.AttractionOpened:
        if attraction_id not in self._attractions:
            data = await self.pool.fetchval(
                "SELECT data::text FROM events WHERE stream_id = $1 AND version = 1"
                " AND type = 'AttractionOpened'",
                catalog.attraction_stream(attraction_id),
            )
            if data is None:
                raise NotFound("attraction not found", "attraction_slug")
            self._attractions[attraction_id] = _attraction.decode(data)
        return self._attractions[attraction_id]
