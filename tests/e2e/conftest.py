"""The gateway in-process over real HTTP, on the real database: the demo catalog seeded and
its read models built, and API keys for both demo organizations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client

from domain import catalog as c
from domain import venues
from infra.apikeys import create_key
from infra.bus import connect
from infra.changes import ChangeFeed
from infra.db import create_pool, migrate
from infra.embedded import free_port
from infra.eventstore import Metadata
from infra.payments import (
    SIMULATOR_API_KEY,
    SIMULATOR_PUBLISHABLE_KEY,
    SIMULATOR_WEBHOOK_SECRET,
    Payments,
)
from infra.settings import Settings
from projections.rebuild import rebuild
from projections.registry import all_projections
from services.api.activity import ActivityLog
from services.api.context import CHANGES, PURCHASES
from services.api.gateway import READS_FOLLOW, create_app
from services.dev.demo_catalog import DEMO_ORGANIZATION, SECOND_ORGANIZATION
from services.dev.sample_event import first_ticket_type, put_on_sale
from services.dev.seed_demo import seed_demo
from services.dev.stripe_sim import create_simulator
from services.dev.stripe_webhooks import signature_header
from services.usecases import catalog_commands
from services.usecases.catalog_commands import organization_id_by_slug
from services.usecases.desk_owners import DeskOwners
from services.usecases.purchases import Purchases
from services.usecases.ticket_documents import Documents

TEST = Metadata(actor="test")
ATTENDEE_LINK = "https://shop.example.com/attendee/{token}"


# The change feeds of the gateways the tests started: they keep read answers in memory until
# the notification of a change reaches them, milliseconds after its commit.
FEEDS: list[ChangeFeed] = []


async def rebuild_read_models(pool: asyncpg.Pool) -> None:
    """Bring every read model up to the event store, as the projectors would, and return once
    every listening gateway has heard of it, so the next read sees the new rows."""
    heard = [(feed, feed.generation(*READS_FOLLOW)) for feed in FEEDS]
    for projection in all_projections().values():
        await rebuild(pool, projection)
    for feed, before in heard:
        for _ in range(500):
            if before is None or feed.generation(*READS_FOLLOW) != before:
                break
            await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
async def catalog(pool: asyncpg.Pool) -> dict[str, int]:
    """Organization ids by slug, with the demo data seeded and projected."""
    await seed_demo(pool, datetime.now(UTC).date())
    await rebuild_read_models(pool)
    ids = {}
    for slug in (DEMO_ORGANIZATION, SECOND_ORGANIZATION):
        found = await organization_id_by_slug(pool, slug)
        assert found is not None
        ids[slug] = found
    return ids


async def issue_key(pool: asyncpg.Pool, organization_id: int, rate_limit: int = 100_000) -> str:
    issued = await create_key(
        pool, organization_id, "e2e", rate_limit_per_minute=rate_limit, metadata=TEST
    )
    return issued.token


@pytest.fixture(scope="session")
async def webhook_port() -> int:
    """The port of the first gateway, where the simulator delivers Stripe's webhooks."""
    return free_port()


@pytest.fixture(scope="session")
async def stripe_sim(webhook_port: int) -> AsyncIterator[TestClient]:
    hook = f"http://127.0.0.1:{webhook_port}/api/v1/webhooks/stripe"
    sim = TestClient(
        TestServer(create_simulator(hook, SIMULATOR_WEBHOOK_SECRET, retry_delays=(0.1, 0.3, 1)))
    )
    await sim.start_server()
    yield sim
    await sim.close()


class Gateways:
    """Starts a gateway per call, like one more process: its own rate-limit windows, sales
    desks and Stripe client. The first one, the hub, lives for the whole run and receives the
    simulator's webhooks; the others are closed when the test that started them ends, since
    each holds database connections (its change feed's among them) from the shared pool."""

    def __init__(self, pool: asyncpg.Pool, stripe_sim: TestClient, webhook_port: int) -> None:
        self._pool = pool
        self._stripe_base = str(stripe_sim.make_url("")).rstrip("/")
        self._webhook_port = webhook_port
        self._started: list[tuple[TestClient, Purchases, Payments]] = []

    async def __call__(
        self, hold_minutes: float = 30.0, stripe_base: str | None = None, **app_options: Any
    ) -> TestClient:
        """`app_options`: create_app's own (shared limits, trusted proxies)."""
        payments = Payments(
            SIMULATOR_API_KEY,
            api_base=stripe_base or self._stripe_base,
            publishable_key=SIMULATOR_PUBLISHABLE_KEY,
            webhook_secret=SIMULATOR_WEBHOOK_SECRET,
        )
        sales = Purchases(
            self._pool,
            payments,
            publishable_key=payments.publishable_key,
            hold_minutes=hold_minutes,
        )
        port = self._webhook_port if not self._started else None
        documents = Documents(self._pool, sales.catalog, "tickets@example.com", ATTENDEE_LINK)
        app = create_app(self._pool, ActivityLog(self._pool), sales, documents, **app_options)
        client = TestClient(TestServer(app, port=port))
        await client.start_server()
        self._started.append((client, sales, payments))
        FEEDS.append(app[CHANGES])
        return client

    @property
    def hub(self) -> TestClient:
        return self._started[0][0]

    @property
    def count(self) -> int:
        return len(self._started)

    async def close_from(self, first: int) -> None:
        """Closes the gateways started from the `first`-th on (the hub is the 0th)."""
        closing, self._started = self._started[first:], self._started[:first]
        for client, sales, payments in closing:
            FEEDS.remove(client.app[CHANGES])
            await client.close()
            await sales.close()
            await payments.close()


@pytest.fixture(scope="session")
async def serve(
    pool: asyncpg.Pool, stripe_sim: TestClient, webhook_port: int
) -> AsyncIterator[Gateways]:
    gateways = Gateways(pool, stripe_sim, webhook_port)
    await gateways()
    yield gateways
    await gateways.close_from(0)


@dataclass
class Routed:
    """A gateway that routes its purchases to the owner of the event's stream."""

    client: TestClient
    sales: Purchases
    owners: DeskOwners
    nc: Client


Start = Callable[..., Awaitable[Routed]]


@pytest.fixture
async def routed(serve: Gateways, settings: Settings) -> AsyncIterator[Start]:
    """Starts gateways with desk affinity, each on a NATS connection of its own."""
    started: list[Routed] = []

    async def start(**options: Any) -> Routed:
        client = await serve(**options)
        sales = client.app[PURCHASES]
        nc = await connect(settings, f"test-gateway-{len(started)}")
        owners = await DeskOwners.open(nc, settings)
        await sales.route(owners)
        started.append(Routed(client, sales, owners, nc))
        return started[-1]

    yield start
    for gateway in started:
        await gateway.owners.close()
        await gateway.nc.close()
    if started:
        nc = await connect(settings, "test-cleanup")
        await nc.jetstream().delete_key_value(settings.desk_owners_bucket)
        await nc.close()


@pytest.fixture(autouse=True)
async def _close_test_gateways(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Gateways a test starts end with it; those of wider fixtures are already running."""
    if "serve" not in request.fixturenames:
        yield
        return
    gateways: Gateways = request.getfixturevalue("serve")
    before = gateways.count
    yield
    await gateways.close_from(max(before, 1))


@pytest.fixture(scope="session")
async def api(serve: Gateways, catalog: dict[str, int]) -> TestClient:
    return serve.hub


@pytest.fixture(scope="session")
async def demo_token(pool: asyncpg.Pool, catalog: dict[str, int]) -> str:
    return await issue_key(pool, catalog[DEMO_ORGANIZATION])


@pytest.fixture(scope="session")
async def aarhus_token(pool: asyncpg.Pool, catalog: dict[str, int]) -> str:
    return await issue_key(pool, catalog[SECOND_ORGANIZATION])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BUYER = {"name": "Simon Hindkaer", "email": "simon@example.com", "phone": "+4512345678"}


async def post(api, token: str, path: str, body: object, status: int | None = None, **headers):
    response = await api.post(path, json=body, headers={**bearer(token), **headers})
    payload = await response.json()
    if status is not None:
        assert response.status == status, payload
    return response, payload


async def new_organization(
    pool: asyncpg.Pool,
    *,
    stripe_account: str | None = "acct_sim_x",
    currency: str = "DKK",
    fee: c.FeeRule | None = None,
) -> int:
    """A fresh organization of its own, so a test can count what it sells."""
    slug = f"scene-{uuid.uuid4().hex[:8]}"
    command = c.RegisterOrganization(
        slug=slug,
        name=slug,
        currency=currency,
        stripe_account_id=stripe_account,
        fee=fee or c.FeeRule(),
    )
    return await catalog_commands.register_organization(pool, command, TEST)


async def venue_with(pool: asyncpg.Pool, organization_id: int, section: venues.SectionPlan) -> int:
    return await catalog_commands.register_venue(
        pool, organization_id, venues.RegisterVenue(key="sal", name="Sal", sections=[section]), TEST
    )


def standing(capacity: int) -> venues.SectionPlan:
    return venues.SectionPlan(
        name="Gulv", seating_mode="standing", width=10.0, height=10.0, standing_capacity=capacity
    )


async def small_event(
    pool: asyncpg.Pool,
    seats: int,
    price: int = 10000,
    stripe_account: str | None = "acct_sim_x",
    **ticket: object,
) -> tuple[str, int, int]:
    """A fresh organization with one event of `seats` seats: (token, event id, ticket type)."""
    org = await new_organization(pool, stripe_account=stripe_account)
    row = venues.Row(identifier="A", start=1, end=seats)
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=price, max_per_purchase=20, **ticket)
    event_id, type_id = await put_on_sale(pool, org, venue_id, plan, TEST)
    return await issue_key(pool, org), event_id, type_id


async def koncert(pool: asyncpg.Pool, organization_id: int, places: int) -> int:
    """The published event `koncert` of the organization, five days ahead, selling `places`
    standing places of its own venue as one type (`Gulv`, 100.00): its ticket type's id."""
    venue_id = await venue_with(pool, organization_id, standing(places))
    venue = await catalog_commands.load_venue(pool, venue_id)
    event_id = await catalog_commands.schedule_event(
        pool,
        organization_id,
        c.ScheduleEvent(
            slug="koncert",
            name="Koncert",
            venue_id=venue_id,
            event_date=datetime.now(UTC) + timedelta(days=5),
            publish=True,
            ticket_types=[
                c.TicketTypePlan(name="Gulv", price_cents=10000, section_ids=[venue.sections[0].id])
            ],
        ),
        TEST,
    )
    return await first_ticket_type(pool, f"event-{event_id}")


async def small_attraction(
    pool: asyncpg.Pool,
    *,
    price: int,
    daily_max: int | None,
    name: str = "Museum",
    stripe_account: str | None = "acct_sim_x",
    capacity: int | None = None,
) -> tuple[str, int]:
    """A fresh organization with one dated attraction `museum`: (token, ticket type)."""
    org = await new_organization(pool, stripe_account=stripe_account)
    venue_id = await venue_with(pool, org, standing(1000))
    attraction_id = await catalog_commands.open_attraction(
        pool,
        org,
        c.OpenAttraction(
            slug="museum",
            name=name,
            venue_id=venue_id,
            visit_date_required=True,
            daily_max_tickets=daily_max,
            ticket_types=[c.TicketTypePlan(name="Voksen", price_cents=price, capacity=capacity)],
        ),
        TEST,
    )
    type_id = await first_ticket_type(pool, f"attraction-{attraction_id}")
    return await issue_key(pool, org), type_id


async def claimed_by_a_killed_gateway(pool: asyncpg.Pool, key: str) -> None:
    """The key's row as a gateway process leaves it when it is killed before it stores its
    answer: no answer, and a claimant that no longer renews its life."""
    changed = await pool.execute(
        "UPDATE idempotency_keys SET status = NULL, body = NULL, claimed_by = 'killed'"
        " WHERE key = $1",
        key,
    )
    assert changed == "UPDATE 1"


async def buyer_bundle(api: TestClient, token: str, purchase: dict) -> dict:
    """The buyer's lookup of a purchase (as POST /purchases answered it) by its access code."""
    response = await api.get(
        f"/api/v1/tickets/{purchase['access_code']}",
        params={"email": BUYER["email"]},
        headers=bearer(token),
    )
    bundle = await response.json()
    assert response.status == 200, bundle
    return bundle


def path_of(href: str) -> str:
    """An absolute link's path: the gateway under test answers it whatever host it names."""
    assert href.startswith("http"), href
    return "/" + href.split("/", 3)[3]


def order(type_id: int, n: int = 1, **extra: object) -> dict:
    return {"event_slug": "show", "quantities": {str(type_id): n}, "buyer": BUYER, **extra}


async def chosen_seat_order(pool: asyncpg.Pool, event_id: int, type_id: int, number: int) -> dict:
    """An order of one seat the buyer chose: seat `number` of row A of a `small_event`."""
    section_id = await pool.fetchval(
        "SELECT data->'ticket_types'->0->'section_ids'->>0 FROM events"
        " WHERE stream_id = $1 AND version = 1",
        f"event-{event_id}",
    )
    seat = {"section_id": int(section_id), "row": "A", "seat_number": number}
    return order(type_id, 1, selected_seats={str(type_id): [seat]})


async def cancelled_intents(stripe_sim: TestClient) -> set[str]:
    """The PaymentIntents cancelled at the simulator so far."""
    response = await stripe_sim.get("/_sim/events")
    events = (await response.json())["data"]
    return {e["data"]["object"]["id"] for e in events if e["type"] == "payment_intent.canceled"}


@pytest.fixture(scope="module")
async def quiet_sim() -> AsyncIterator[TestClient]:
    """A simulator of the test module's own that delivers no webhooks: each delivery of a
    Stripe event is the test's own (`redeliver`), so it decides how many arrive and when."""
    sim = TestClient(TestServer(create_simulator(None, SIMULATOR_WEBHOOK_SECRET)))
    await sim.start_server()
    yield sim
    await sim.close()


async def seats_held(pool: asyncpg.Pool, event_id: int) -> int:
    """How many holds the event's stream has stored (`SeatsHeld`), released or not."""
    return await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'SeatsHeld'",
        f"event-{event_id}",
    )


async def signed_webhook(gateway: TestClient, payload: str) -> ClientResponse:
    """`payload` posted to the Stripe webhook as Stripe sends it, signed now."""
    signature = signature_header(payload, SIMULATOR_WEBHOOK_SECRET, int(time.time()))
    return await gateway.post(
        "/api/v1/webhooks/stripe",
        data=payload,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


async def redeliver(gateway: TestClient, event: dict) -> str:
    """A Stripe event again, signed afresh, as Stripe retries it; the webhook's outcome."""
    event = {k: v for k, v in event.items() if k != "delivery"}
    response = await signed_webhook(gateway, json.dumps(event))
    assert response.status == 200, await response.text()
    return (await response.json())["outcome"]


async def succeeded_at_stripe(sim: TestClient, intent: str) -> dict:
    """The buyer pays at Stripe: the payment_intent.succeeded Stripe then sends."""
    paid = await sim.post(f"/_sim/payment_intents/{intent}/succeed")
    assert paid.status == 200, await paid.text()
    events = (await (await sim.get(f"/_sim/events?payment_intent={intent}")).json())["data"]
    return next(e for e in events if e["type"] == "payment_intent.succeeded")


@contextlib.asynccontextmanager
async def demo_database(admin_url: str, purpose: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A fresh, migrated database of its own with the demo data (its url, and a pool on it
    while the block runs), for tests whose commands must not disturb the shared one; dropped
    afterwards."""
    name = f"linjerum_test_{purpose}_{uuid.uuid4().hex[:10]}"
    url = f"{admin_url.rpartition('/')[0]}/{name}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        pool = await create_pool(url, size=4)
        try:
            await migrate(pool)
            await seed_demo(pool, datetime.now(UTC).date())
            yield url, pool
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
