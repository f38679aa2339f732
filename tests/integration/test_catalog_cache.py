"""The process-wide catalog reads each registered entry once, however many buyers ask at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import pytest

from domain import catalog, venues
from domain.errors import NotFound
from infra.eventstore import Metadata
from services.usecases import catalog_commands
from services.usecases.catalog_cache import Catalog
from tests.integration.counting_pool import CountingPool

META = Metadata(actor="test-catalog-cache")


def _slug() -> str:
    return f"cache-{uuid.uuid4().hex[:12]}"


async def _organization(pool: asyncpg.Pool, slug: str) -> int:
    return await catalog_commands.register_organization(
        pool, catalog.RegisterOrganization(slug=slug, name="Cache", currency="DKK"), META
    )


@pytest.fixture(scope="module")
async def created(pool: asyncpg.Pool) -> tuple[int, int]:
    """(organization id, event id) of a fresh organization with one venue and one event."""
    org = await _organization(pool, _slug())
    rows = [venues.Row(identifier="A", start=1, end=10)]
    venue = await catalog_commands.register_venue(
        pool,
        org,
        venues.RegisterVenue(
            key=_slug(),
            name="Hall",
            sections=[venues.SectionPlan(name="Floor", width=400.0, height=200.0, rows=rows)],
        ),
        META,
    )
    sections = (await catalog_commands.load_venue(pool, venue)).sections
    event = await catalog_commands.schedule_event(
        pool,
        org,
        catalog.ScheduleEvent(
            slug=_slug(),
            name="Show",
            venue_id=venue,
            event_date=datetime.now(UTC) + timedelta(days=30),
            ticket_types=[
                catalog.TicketTypePlan(
                    name="Adult", price_cents=10000, section_ids=[s.id for s in sections]
                )
            ],
        ),
        META,
    )
    return org, event


def _catalog(pool: asyncpg.Pool) -> tuple[Catalog, CountingPool]:
    counting = CountingPool(pool)
    return Catalog(cast(asyncpg.Pool, counting)), counting


async def test_concurrent_misses_share_one_read(
    pool: asyncpg.Pool, created: tuple[int, int]
) -> None:
    org, event = created
    cache, counting = _catalog(pool)
    organizations = await asyncio.gather(*(cache.organization(org) for _ in range(100)))
    assert counting.reads == 1
    assert {o.organization_id for o in organizations} == {org}
    slug = organizations[0].slug
    owners = await asyncio.gather(
        *(cache.owner(catalog.claim_stream("org", slug)) for _ in range(100))
    )
    assert owners == [org] * 100
    assert counting.reads == 2
    scheduled = await asyncio.gather(*(cache.scheduled(event) for _ in range(100)))
    assert {s.event_id for s in scheduled} == {event}
    assert counting.reads == 3
    await cache.organization(org)
    await cache.owner(catalog.claim_stream("org", slug))
    await cache.scheduled(event)
    assert counting.reads == 3


async def test_an_unclaimed_key_is_not_cached(pool: asyncpg.Pool) -> None:
    cache, counting = _catalog(pool)
    slug = _slug()
    claim = catalog.claim_stream("org", slug)
    assert await asyncio.gather(*(cache.owner(claim) for _ in range(10))) == [None] * 10
    assert counting.reads == 1
    assert await cache.owner(claim) is None
    assert counting.reads == 2
    org = await _organization(pool, slug)
    assert await cache.owner(claim) == org
    assert await cache.owner(claim) == org
    assert counting.reads == 3


async def test_an_unknown_event_is_not_found_for_every_caller(pool: asyncpg.Pool) -> None:
    cache, _ = _catalog(pool)
    [unknown] = await catalog_commands.allocate_ids(pool, 1)
    results = await asyncio.gather(
        *(cache.scheduled(unknown) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, NotFound) for r in results)
    with pytest.raises(NotFound):
        await cache.scheduled(unknown)
