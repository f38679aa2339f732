"""Seeding the demo catalog (services/dev/demo_catalog.py) for development and the tests. Every
object is created through the same commands a partner's data would be, and found again by its
natural key, so seeding twice (or concurrently) creates nothing twice, and a data folder seeded
by an older version gets what it lacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date

from domain import catalog
from domain.catalog import RegisterOrganization, ScheduleEvent
from domain.errors import AlreadyExists
from domain.venues import RegisterVenue
from infra.eventstore import Metadata
from services.dev import demo_catalog as demo
from services.usecases import catalog_commands as commands
from services.usecases.catalog_commands import Pool

SEED = Metadata(actor="seed-demo")


async def _ensure(
    pool: Pool,
    claim: str,
    create: Callable[[], Awaitable[int]],
    created: dict[str, int],
    kind: str,
) -> int:
    """The object's id: found by its claim, or created (and counted) when missing."""
    existing = await commands.owner_of(pool, claim)
    if existing is not None:
        return existing
    try:
        new_id = await create()
    except AlreadyExists:
        owner = await commands.owner_of(pool, claim)
        assert owner is not None
        return owner
    created[kind] += 1
    return new_id


async def _organization(pool: Pool, cmd: RegisterOrganization, created: dict[str, int]) -> int:
    return await _ensure(
        pool,
        catalog.claim_stream("org", cmd.slug),
        lambda: commands.register_organization(pool, cmd, SEED),
        created,
        "organizations",
    )


async def _venue(pool: Pool, org: int, cmd: RegisterVenue, created: dict[str, int]) -> int:
    return await _ensure(
        pool,
        catalog.claim_stream("venue", cmd.key, org),
        lambda: commands.register_venue(pool, org, cmd, SEED),
        created,
        "venues",
    )


async def _event(pool: Pool, org: int, cmd: ScheduleEvent, created: dict[str, int]) -> int:
    return await _ensure(
        pool,
        catalog.claim_stream("event", cmd.slug, org),
        lambda: commands.schedule_event(pool, org, cmd, SEED),
        created,
        "events",
    )


async def _det_ny_teater(pool: Pool, today: date, created: dict[str, int]) -> None:
    """The theatre and its events, the museum and the discount codes."""
    org = await _organization(pool, demo.THEATRE_ORGANIZATION, created)
    venue_id = await _venue(pool, org, demo.THEATRE, created)
    venue = await commands.load_venue(pool, venue_id)
    for cmd in demo.theatre_events(venue, today):
        event_id = await _event(pool, org, cmd, created)
        if cmd.slug == demo.CANCELLED_EVENT:
            await commands.change_event_status(
                pool,
                event_id,
                lambda s: catalog.cancel_event(s, demo.CANCELLATION_REASON),
                SEED,
            )
    museum_id = await _venue(pool, org, demo.MUSEUM, created)
    museum = demo.museum(museum_id)
    await _ensure(
        pool,
        catalog.claim_stream("attraction", museum.slug, org),
        lambda: commands.open_attraction(pool, org, museum, SEED),
        created,
        "attractions",
    )
    for code in demo.discount_codes(today):
        await _ensure(
            pool,
            catalog.claim_stream("discount", code.code, org),
            lambda code=code: commands.create_discount_code(pool, org, code, SEED),
            created,
            "discount_codes",
        )


async def _aarhus_teater(pool: Pool, today: date, created: dict[str, int]) -> None:
    org = await _organization(pool, demo.AARHUS_ORGANIZATION, created)
    stage_id = await _venue(pool, org, demo.AARHUS_STAGE, created)
    stage = await commands.load_venue(pool, stage_id)
    for cmd in demo.aarhus_events(stage, today):
        await _event(pool, org, cmd, created)


async def _odense_friscene(pool: Pool, today: date, created: dict[str, int]) -> None:
    org = await _organization(pool, demo.NO_STRIPE, created)
    venue_id = await _venue(pool, org, demo.FRISCENEN, created)
    venue = await commands.load_venue(pool, venue_id)
    await _event(pool, org, demo.concert(venue, today), created)


async def seed_demo(pool: Pool, today: date) -> dict[str, int]:
    """Create whatever of the demo catalog is missing; returns how many of each were created."""
    created = dict.fromkeys(
        ("organizations", "venues", "events", "attractions", "discount_codes"), 0
    )
    await _det_ny_teater(pool, today, created)
    await _aarhus_teater(pool, today, created)
    await _odense_friscene(pool, today, created)
    return created
