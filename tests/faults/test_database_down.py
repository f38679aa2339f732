"""PostgreSQL unreachable for a gateway (its connections cut, new ones refused): purchases,
scans and lookups answer 503 `service_unavailable` with Retry-After and store nothing; once the
database is back the same requests go through, a purchase retried with its Idempotency-Key is
stored once, and the gate admits each paid ticket exactly once (DESIGN invariant 8)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.db import create_pool
from infra.payments import (
    SIMULATOR_API_KEY,
    SIMULATOR_PUBLISHABLE_KEY,
    SIMULATOR_WEBHOOK_SECRET,
    Payments,
)
from infra.settings import Settings
from services.api.activity import ActivityLog
from services.api.gateway import create_app
from services.usecases.purchases import Purchases
from services.usecases.ticket_documents import Documents
from tests.e2e.conftest import ATTENDEE_LINK, BUYER, bearer, order, post, small_event
from tests.faults.sales import Score, assert_admitted_once, gate, sell_and_admit, wait_paid
from tests.servers import CuttableProxy, through

BACK_SECONDS = 15.0


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[tuple[CuttableProxy, str]]:
    """A proxy in front of the test database, and the database URL through it."""
    url = urlsplit(settings.database_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.restore()
    yield proxy, through(settings.database_url, proxy.port)
    await proxy.cut()


@pytest.fixture
async def gateway(proxy, stripe_sim, catalog) -> AsyncIterator[TestClient]:
    """A gateway whose every connection to PostgreSQL goes through the proxy."""
    _, url = proxy
    pool = await create_pool(url, 5)
    payments = Payments(
        SIMULATOR_API_KEY,
        api_base=str(stripe_sim.make_url("")).rstrip("/"),
        publishable_key=SIMULATOR_PUBLISHABLE_KEY,
        webhook_secret=SIMULATOR_WEBHOOK_SECRET,
    )
    sales = Purchases(pool, payments, publishable_key=payments.publishable_key)
    documents = Documents(pool, sales.catalog, "tickets@example.com", ATTENDEE_LINK)
    client = TestClient(TestServer(create_app(pool, ActivityLog(pool), sales, documents)))
    await client.start_server()
    yield client
    await client.close()
    await sales.close()
    await payments.close()
    pool.terminate()


async def _unavailable(response) -> None:
    body = await response.json()
    assert response.status == 503, body
    assert body["error"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) > 0


async def test_database_unreachable_is_503_and_nothing_is_lost_or_doubled(
    gateway, proxy, api, stripe_sim, pool
) -> None:
    cuttable, _ = proxy
    token, _, type_id = await small_event(pool, 20)
    score = Score()
    await sell_and_admit(gateway, stripe_sim, token, type_id, score)
    _, ready = await post(gateway, token, "/api/v1/purchases", order(type_id, 1), 201)
    intent = ready["payment"]["stripe_payment_intent_id"]
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200
    await wait_paid(gateway, token, ready["purchase"]["token"])
    code = ready["purchase"]["tickets"][0]["ticket_code"]
    score.paid[ready["purchase"]["token"]] = [ready["purchase"]["tickets"][0]["id"]]
    retried = {**bearer(token), "Idempotency-Key": "faults-retried-purchase"}

    ticket = f"/api/v1/tickets/{code}"
    await cuttable.cut()
    for _ in range(2):
        await _unavailable(await gateway.post(f"{ticket}/scan", headers=bearer(token)))
        await _unavailable(await gateway.get(f"{ticket}/verify", headers=bearer(token)))
        await _unavailable(
            await gateway.post("/api/v1/purchases", json=order(type_id, 1), headers=retried)
        )
        lookup = f"/api/v1/tickets/{ready['purchase']['access_code']}"
        await _unavailable(
            await gateway.get(lookup, params={"email": BUYER["email"]}, headers=bearer(token))
        )
    await cuttable.restore()

    deadline = time.monotonic() + BACK_SECONDS
    while True:
        response = await gateway.post(f"{ticket}/scan", headers=bearer(token))
        if response.status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    body = await response.json()
    assert response.status == 200 and body["reason"] == "ok", body
    assert await gate(gateway, token, code) == "already_scanned"
    created = []
    for _ in range(2):
        response = await gateway.post("/api/v1/purchases", json=order(type_id, 1), headers=retried)
        assert response.status == 201, await response.text()
        created.append((await response.json())["purchase"])
    assert created[0]["token"] == created[1]["token"]
    score.pending[created[0]["token"]] = [t["id"] for t in created[0]["tickets"]]
    await sell_and_admit(gateway, stripe_sim, token, type_id, score)
    await assert_admitted_once(pool, score)
