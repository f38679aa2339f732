"""One event on sale for an organization the caller made: the smallest catalog a purchase can be
tried on. Tests and benchmarks build many of them, each with names of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from msgspec.structs import replace

from domain import catalog as c
from domain import streams
from infra.eventstore import Metadata, read_stream
from services.usecases import catalog_commands

SLUG = "show"


async def put_on_sale(
    pool: asyncpg.Pool,
    organization_id: int,
    venue_id: int,
    plan: c.TicketTypePlan,
    metadata: Metadata,
    *,
    name: str = "Show",
    terms: c.TicketTerms | None = None,
) -> tuple[int, int]:
    """Schedules `name` (slug `show`) three days from now, published, with the one ticket type
    `plan` over the venue's first section, under `terms` (the default ones if None); returns the
    event's id and the ticket type's."""
    venue = await catalog_commands.load_venue(pool, venue_id)
    event_id = await catalog_commands.schedule_event(
        pool,
        organization_id,
        c.ScheduleEvent(
            slug=SLUG,
            name=name,
            venue_id=venue_id,
            event_date=datetime.now(UTC) + timedelta(days=3),
            publish=True,
            ticket_types=[replace(plan, section_ids=[venue.sections[0].id])],
            terms=terms or c.TicketTerms(),
        ),
        metadata,
    )
    return event_id, await first_ticket_type(pool, streams.event(event_id))


async def first_ticket_type(pool: asyncpg.Pool, stream_id: str) -> int:
    """The id given to the first ticket type of an event or attraction when it was created (the
    caller knows its plan, not the id the catalog allocated)."""
    created = (await read_stream(pool, stream_id))[0].event()
    assert isinstance(created, c.EventScheduled | c.AttractionOpened), created
    return created.ticket_types[0].id
