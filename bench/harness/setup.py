"""A benchmark's own database and stream on the configured servers (or the embedded ones under
its data folder), and what it puts there before the clock starts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from domain import catalog as c
from domain import venues
from infra.apikeys import create_key
from infra.eventstore import Metadata
from infra.scratch import scratch
from infra.settings import Settings
from projections.rebuild import rebuild
from projections.registry import all_projections
from services.dev.sample_event import put_on_sale
from services.servers import connected
from services.usecases import catalog_commands

META = Metadata(actor="bench")
UNREACHABLE_RATE_LIMIT = 10_000_000  # requests per minute: no benchmark gets near it


@contextlib.asynccontextmanager
async def bench_settings(
    data_dir: str, label: str, *, nats: bool = True
) -> AsyncIterator[Settings]:
    """Settings whose database and NATS stream are this run's own (on the configured servers,
    or the embedded ones under `data_dir`); both are removed on the way out."""
    base = Settings.from_env(data_dir=Path(data_dir))
    base.data_dir.mkdir(parents=True, exist_ok=True)
    name = f"linjerum_bench_{label}_{uuid.uuid4().hex[:8]}"
    async with connected(base, nats=nats) as live, scratch(live, name, stream=nats) as settings:
        yield settings


async def rebuild_read_models(pool: asyncpg.Pool, timeout: float = 60.0) -> None:
    """Every read model rebuilt once all events are settled: the store only hands out events
    older than every transaction still in flight on the server, other databases' included."""
    deadline = time.monotonic() + timeout
    settled = (
        "SELECT coalesce(max(tx_id) < pg_snapshot_xmin(pg_current_snapshot()), true) FROM events"
    )
    while not await pool.fetchval(settled):
        if time.monotonic() > deadline:
            raise RuntimeError("events still not settled: a long transaction on the server?")
        await asyncio.sleep(0.1)
    for projection in all_projections().values():
        await rebuild(pool, projection)


async def unlimited_keys(pool: asyncpg.Pool, organization_id: int, count: int = 1) -> list[str]:
    """`count` API keys of the organization whose general rate limit the benchmark never
    reaches."""
    tokens = []
    for i in range(count):
        issued = await create_key(
            pool,
            organization_id,
            f"bench {i}",
            rate_limit_per_minute=UNREACHABLE_RATE_LIMIT,
            metadata=META,
        )
        tokens.append(issued.token)
    return tokens


@dataclass(frozen=True)
class BenchEvent:
    organization_id: int
    event_id: int
    ticket_type_id: int
    capacity: int


async def create_event(
    pool: asyncpg.Pool,
    *,
    rows: int,
    seats_per_row: int,
    price_cents: int,
    stripe_account: str | None,
    max_per_purchase: int = c.MAX_PER_PURCHASE,
) -> BenchEvent:
    """A fresh organization with one published event (slug `show`) on sale now: one seated
    section of `rows` rows of `seats_per_row` seats, one ticket type for all of them."""
    org = await catalog_commands.register_organization(
        pool,
        c.RegisterOrganization(
            slug=f"bench-{uuid.uuid4().hex[:8]}",
            name="Bench Teater",
            currency="DKK",
            stripe_account_id=stripe_account,
        ),
        META,
    )
    section = venues.SectionPlan(
        name="Parket",
        width=40.0,
        height=40.0,
        rows=[
            venues.Row(identifier=f"R{r}", start=1, end=seats_per_row) for r in range(1, rows + 1)
        ],
    )
    venue_id = await catalog_commands.register_venue(
        pool, org, venues.RegisterVenue(key="sal", name="Store Sal", sections=[section]), META
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=price_cents, max_per_purchase=max_per_purchase)
    event_id, type_id = await put_on_sale(pool, org, venue_id, plan, META, name="Premiere")
    return BenchEvent(org, event_id, type_id, rows * seats_per_row)
