"""The event-sourced catalog against the real database: demo seeding is idempotent under
concurrency, and the catalog read model built live equals one rebuilt from the event store."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
import nats
import pytest

from domain import catalog
from domain.errors import AlreadyExists
from infra.bus import ensure_stream
from infra.db import create_pool, migrate
from infra.eventstore import Metadata
from infra.scratch import database_name, scratch
from infra.settings import Settings
from infra.supervise import stop_tasks
from projections.catalog import CatalogProjection
from projections.framework import live_schema, read_checkpoint
from projections.rebuild import rebuild
from services.dev.demo_catalog import DEMO_ORGANIZATION
from services.dev.seed_demo import seed_demo
from services.health import behind
from services.usecases import catalog_commands
from services.workers.projector import Projector
from services.workers.relay import Relay

SCHEMA = live_schema(CatalogProjection())
TABLES = ("organizations", "venues", "events", "attractions", "ticket_types", "discount_codes")


async def _snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple]]:
    return {
        table: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {SCHEMA}.{table} ORDER BY id")]
        for table in TABLES
    }


@pytest.fixture(scope="module")
async def fresh(settings: Settings):
    """A database and JetStream stream of their own: these tests count everything in them."""
    async with scratch(settings, f"{database_name(settings)}_catalog") as own:
        pool = await create_pool(own.database_url, size=10)
        await migrate(pool)
        yield pool, own
        await pool.close()


@pytest.fixture(scope="module")
async def pool(fresh) -> asyncpg.Pool:
    return fresh[0]


@pytest.fixture(scope="module")
async def seeded(pool: asyncpg.Pool) -> list[dict[str, int]]:
    today = datetime.now(UTC).date()
    return list(await asyncio.gather(*(seed_demo(pool, today) for _ in range(4))))


async def test_concurrent_seeds_create_each_object_once(
    pool: asyncpg.Pool, seeded: list[dict[str, int]]
) -> None:
    totals = {kind: sum(run[kind] for run in seeded) for kind in seeded[0]}
    assert totals == {
        "organizations": 3,
        "venues": 4,
        "events": 7,
        "attractions": 1,
        "discount_codes": 4,
    }
    again = await seed_demo(pool, datetime.now(UTC).date())
    assert set(again.values()) == {0}
    claims = await pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'SlugClaimed' AND stream_id LIKE 'slug-%'"
    )
    assert claims == sum(totals.values())


async def test_a_taken_slug_is_refused_and_nothing_is_stored(
    pool: asyncpg.Pool, seeded: list[dict[str, int]]
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM events")
    with pytest.raises(AlreadyExists):
        await catalog_commands.register_organization(
            pool,
            catalog.RegisterOrganization(slug=DEMO_ORGANIZATION, name="Impostor", currency="EUR"),
            Metadata(actor="test"),
        )
    assert await pool.fetchval("SELECT count(*) FROM events") == before


@contextlib.asynccontextmanager
async def _running(*coros):
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        await stop_tasks(tasks)


async def test_live_catalog_equals_rebuild(
    pool: asyncpg.Pool, fresh, seeded: list[dict[str, int]]
) -> None:
    settings = fresh[1]
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    projection = CatalogProjection()
    try:
        async with _running(
            Relay(pool, js, settings).run(), Projector(pool, js, settings, projection).run()
        ):
            # Until the projector has applied every catalog event the seed stored: a count of
            # some table's rows can be reached while later events are still on their way.
            for _ in range(300):
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    checkpoint = await read_checkpoint(pool, SCHEMA)
                    if (await behind(pool, checkpoint, projection.categories))["events"] == 0:
                        break
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
    live = await _snapshot(pool)
    organization = await pool.fetchrow(
        f"SELECT * FROM {SCHEMA}.organizations WHERE slug = $1", DEMO_ORGANIZATION
    )
    assert organization["currency"] == "DKK"
    theatre = await pool.fetchrow(
        f"SELECT * FROM {SCHEMA}.venues WHERE organization_id = $1 AND seated_capacity > 0",
        organization["id"],
    )
    assert theatre["seated_capacity"] >= 800
    hamlet = await pool.fetchrow(f"SELECT * FROM {SCHEMA}.events WHERE slug = 'hamlet-2026'")
    assert hamlet["status"] == "published"
    prices = await pool.fetch(
        f"SELECT name, price_cents FROM {SCHEMA}.ticket_types WHERE event_id = $1"
        " ORDER BY display_order",
        hamlet["id"],
    )
    assert [(p["name"], p["price_cents"]) for p in prices][:2] == [
        ("Voksen", 35000),
        ("Barn", 17500),
    ]
    statuses = dict(await pool.fetch(f"SELECT slug, status FROM {SCHEMA}.events"))
    assert statuses["maagen"] == "draft" and statuses["aflyst-gala"] == "cancelled"

    assert await rebuild(pool, projection) > 0
    assert await _snapshot(pool) == live
