"""Stripe's report of a payment, at the gateway that took the purchase: decided on the purchase
as that gateway stored it, without reading its stream first, and exactly as it would be on the
stream as read: the same outcome once, in the same chain, and decided again as read when the
stream changed since."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from domain import streams
from services.api.context import PURCHASES
from services.usecases.ticketing import SETTLING_WAIT
from tests.e2e.conftest import (
    Start,
    bearer,
    order,
    post,
    redeliver,
    small_event,
    succeeded_at_stripe,
)


async def _gateway(serve, quiet_sim: TestClient, hold_minutes: float = 30.0) -> TestClient:
    base = str(quiet_sim.make_url("")).rstrip("/")
    return await serve(hold_minutes=hold_minutes, stripe_base=base)


def _count_reads(gateway: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The purchase streams the gateway's webhooks and polls read from now on."""
    reads = gateway.app[PURCHASES].reads
    read: list[str] = []
    get = reads.get

    async def counted(key: str) -> list:
        read.append(key)
        return await get(key)

    monkeypatch.setattr(reads, "get", counted)
    return read


async def _stored(pool: asyncpg.Pool, purchase: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT type, metadata FROM events WHERE stream_id = $1 ORDER BY version",
        streams.purchase(purchase),
    )


async def test_a_payment_of_a_purchase_opened_here_is_settled_without_reading_it(
    routed: Start,
    pool: asyncpg.Pool,
    quiet_sim: TestClient,
    catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both ways a purchase is opened: at the desk of the gateway that took it (the intent
    created first and stored with the purchase), and at another gateway's, the event's owner
    (the intent created by the gateway that took it, once the owner stored the purchase)."""
    token, _, type_id = await small_event(pool, 2)
    base = str(quiet_sim.make_url("")).rstrip("/")
    owner = (await routed(stripe_base=base)).client
    other = (await routed(stripe_base=base)).client
    purchases = [
        (gateway, (await post(gateway, token, "/api/v1/purchases", order(type_id), 201))[1])
        for gateway in (owner, other)
    ]
    opened = [await _appends_opening(pool, c["purchase"]["token"]) for _, c in purchases]
    assert opened == [1, 2]
    reads = {gateway: _count_reads(gateway, monkeypatch) for gateway in (owner, other)}

    for gateway, created in purchases:
        purchase = created["purchase"]["token"]
        read = reads[gateway]
        intent = created["payment"]["stripe_payment_intent_id"]
        succeeded = await succeeded_at_stripe(quiet_sim, intent)
        assert await redeliver(gateway, succeeded) == "paid"
        assert read == []
        # Stripe's retry of the same event reads the stream, which says it was applied.
        assert await redeliver(gateway, succeeded) == "duplicate"
        assert read == [streams.purchase(purchase)]

        stored = await _stored(pool, purchase)
        assert [r["type"] for r in stored].count("PurchasePaid") == 1
        opening, paid = json.loads(stored[0]["metadata"]), json.loads(stored[-1]["metadata"])
        assert paid["causation_id"] == succeeded["id"]
        assert paid["correlation_id"] == opening["correlation_id"] is not None


async def _appends_opening(pool: asyncpg.Pool, purchase: str) -> int:
    """The transactions that stored the purchase's opening and its PaymentIntent."""
    return await pool.fetchval(
        "SELECT count(DISTINCT tx_id) FROM events WHERE stream_id = $1"
        " AND type IN ('PurchaseOpened', 'PaymentIntentCreated')",
        streams.purchase(purchase),
    )


async def test_a_payment_delivered_many_times_at_once_is_applied_once(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog
) -> None:
    token, _, type_id = await small_event(pool, 2)
    gateway = await _gateway(serve, quiet_sim)
    _, created = await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    succeeded = await succeeded_at_stripe(quiet_sim, created["payment"]["stripe_payment_intent_id"])

    outcomes = await asyncio.gather(*(redeliver(gateway, succeeded) for _ in range(8)))
    assert sorted(outcomes) == ["duplicate"] * 7 + ["paid"], outcomes
    stored = await _stored(pool, created["purchase"]["token"])
    assert [r["type"] for r in stored].count("PurchasePaid") == 1


async def test_a_payment_of_a_purchase_cancelled_since_is_decided_on_the_stream_as_read(
    serve, pool: asyncpg.Pool, quiet_sim: TestClient, catalog
) -> None:
    """The gateway remembers the purchase as pending; it was cancelled since (here by a second
    gateway), so the payment is late: its seat is free again and sold to it, never a plain
    `paid` decided on what the first gateway remembered."""
    token, _, type_id = await small_event(pool, 1)
    opener = await _gateway(serve, quiet_sim)
    other = await _gateway(serve, quiet_sim)
    _, created = await post(opener, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    await post(other, token, f"/api/v1/purchases/{purchase}/cancel", None, 200)

    succeeded = await succeeded_at_stripe(quiet_sim, created["payment"]["stripe_payment_intent_id"])
    assert await redeliver(opener, succeeded) == "paid_late"
    types = [r["type"] for r in await _stored(pool, purchase)]
    assert types.count("PurchasePaid") == 1 and "PurchaseCancelled" in types, types


@pytest.mark.parametrize("storing", [0.2, 1.0])
async def test_a_poll_while_its_payment_report_is_stored_shows_it_paid(
    serve,
    pool: asyncpg.Pool,
    quiet_sim: TestClient,
    catalog,
    monkeypatch: pytest.MonkeyPatch,
    storing: float,
) -> None:
    """The buyer's page polls the moment Stripe confirmed the payment to it, while Stripe's
    report is being stored: the poll waits for it rather than answering what it replaces, but
    never longer than SETTLING_WAIT in all (a report slow to store is answered as it stands)."""
    token, _, type_id = await small_event(pool, 2)
    gateway = await _gateway(serve, quiet_sim)
    _, created = await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    succeeded = await succeeded_at_stripe(quiet_sim, intent)
    recorder = gateway.app[PURCHASES].recorder
    append = recorder.append

    async def slow(*args, **kwargs):
        await asyncio.sleep(storing)
        return await append(*args, **kwargs)

    monkeypatch.setattr(recorder, "append", slow)
    delivery = asyncio.create_task(redeliver(gateway, succeeded))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    polled = await gateway.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
    waited = time.monotonic() - started
    paid = (await polled.json())["purchase"]["paid_at"] is not None
    if storing < SETTLING_WAIT:
        assert paid
    else:
        assert not paid and waited < SETTLING_WAIT + 0.2, waited
    assert await delivery == "paid"
