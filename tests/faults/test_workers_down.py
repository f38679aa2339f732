"""Sales and the gate go on while the relay, the projectors and NATS are stopped and started
again; afterwards every event is in JetStream once, the read models have caught up with every
purchase, payment and scan, a rebuild equals them row for row, and the gate admitted each paid
ticket exactly once (DESIGN invariants 2, 3, 4)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from nats.js.errors import NotFoundError

from infra.bus import connect
from infra.settings import Settings
from infra.supervise import stop_task
from projections.framework import Projection
from projections.rebuild import rebuild
from projections.registry import all_projections
from services.workers.projector import Projector, consumer_name
from services.workers.relay import Relay
from tests.e2e.conftest import small_event
from tests.faults.sales import Score, assert_admitted_once, sell_and_admit
from tests.servers import OwnNats

PROJECTED = ("tickets", "purchases", "availability")
WAIT_SECONDS = 30.0


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT_SECONDS:.0f}s")
        await asyncio.sleep(0.1)


class Workers:
    """The relay and the projectors of one run, on a NATS server of the test's own."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, nats: OwnNats) -> None:
        self.pool = pool
        self.settings = settings
        self.nats = nats
        self.relay: asyncio.Task[None] | None = None
        self.projectors: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._run = uuid.uuid4().hex[:8]

    async def __aenter__(self) -> Workers:
        client = await connect(self.settings, f"faults-{self._run}")
        self._stack.push_async_callback(client.close)
        self.js = client.jetstream()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop_relay()
        await self.stop_projectors()
        await self._stack.aclose()

    async def start_projectors(self) -> None:
        # Kept together, as `linjerum run` keeps every read model: one consumer, one transaction.
        projections: list[Projection] = [all_projections()[name] for name in PROJECTED]
        projector = Projector(self.pool, self.js, self.settings, *projections)
        self.projectors.append(asyncio.create_task(projector.run()))

        async def subscribed() -> bool:
            try:
                await self.js.consumer_info(self.settings.nats_stream, consumer_name(*projections))
            except NotFoundError:
                return False
            return True

        await _until(subscribed, "the projectors did not subscribe")

    async def stop_projectors(self) -> None:
        for task in self.projectors:
            await stop_task(task)
        self.projectors.clear()

    def start_relay(self) -> None:
        relay = Relay(self.pool, self.js, self.settings, name=f"faults-{self._run}")
        self.relay = asyncio.create_task(relay.run())

    async def stop_relay(self) -> None:
        await stop_task(self.relay)
        self.relay = None


@pytest.fixture
async def workers(pool, settings: Settings, tmp_path: Path) -> AsyncIterator[Workers]:
    nats = OwnNats(tmp_path / "jetstream")
    await nats.start()
    run = uuid.uuid4().hex[:8]
    own = dataclasses.replace(
        settings,
        nats_url=nats.url,
        nats_stream=f"LJFAULTS_{run.upper()}",
        subject_prefix=f"ljfaults.{run}",
    )
    try:
        async with Workers(pool, own, nats) as running:
            # Subscribed to the empty stream first: a projector resumes at the read model's
            # checkpoint, which names no message of this new stream.
            await running.start_projectors()
            running.start_relay()
            yield running
    finally:
        await nats.stop()


async def _published_once(workers: Workers) -> None:
    """Every event of the store is in the stream, and no event twice."""

    async def all_there() -> bool:
        try:
            info = await workers.js.stream_info(workers.settings.nats_stream)
        except Exception:
            return False
        stored = await workers.pool.fetchval("SELECT count(*) FROM events")
        assert info.state.messages <= stored, "an event was published twice"
        return info.state.messages == stored

    await _until(all_there, "the relay did not publish every event")


async def _projected(pool: asyncpg.Pool, score: Score) -> None:
    """The read models show every acknowledged purchase, payment and scan."""
    paid_tickets = [i for ids in score.paid.values() for i in ids]

    async def caught_up() -> bool:
        purchases = await pool.fetch(
            "SELECT token, status FROM rm_purchases.purchases WHERE token = ANY($1)",
            [*score.paid, *score.pending],
        )
        tickets = await pool.fetch(
            "SELECT status, scan_count FROM rm_tickets.tickets WHERE ticket_id = ANY($1)",
            paid_tickets,
        )
        return dict(purchases) == {
            **{t: "paid" for t in score.paid},
            **{t: "pending_payment" for t in score.pending},
        } and sorted(map(tuple, tickets)) == [("scanned", 1)] * len(paid_tickets)

    await _until(caught_up, "the read models did not catch up")


async def _rebuild_equals_live(pool: asyncpg.Pool, organization_id: int) -> None:
    query = "SELECT * FROM rm_tickets.tickets WHERE organization_id = $1 ORDER BY ticket_id"
    live = [tuple(r) for r in await pool.fetch(query, organization_id)]
    await rebuild(pool, all_projections()["tickets"])
    assert [tuple(r) for r in await pool.fetch(query, organization_id)] == live


async def test_relay_projectors_and_nats_stopped_and_started(
    api, pool, stripe_sim, workers: Workers
) -> None:
    token, event_id, type_id = await small_event(pool, 40)
    organization_id = await pool.fetchval(
        "SELECT (data->>'organization_id')::bigint FROM events"
        " WHERE stream_id = $1 AND version = 1",
        f"event-{event_id}",
    )
    score = Score()
    await sell_and_admit(api, stripe_sim, token, type_id, score)

    await workers.stop_projectors()
    await sell_and_admit(api, stripe_sim, token, type_id, score)
    await workers.start_projectors()

    await workers.stop_relay()
    await sell_and_admit(api, stripe_sim, token, type_id, score)
    workers.start_relay()

    await workers.nats.stop()
    await sell_and_admit(api, stripe_sim, token, type_id, score)
    await workers.nats.start()
    await sell_and_admit(api, stripe_sim, token, type_id, score)

    await _published_once(workers)
    await _projected(pool, score)
    await assert_admitted_once(pool, score)
    await _rebuild_equals_live(pool, organization_id)
