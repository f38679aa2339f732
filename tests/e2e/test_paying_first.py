"""Paying first: when a gateway's sales desk foresees that a purchase will go through, the
PaymentIntent is created before the hold and stored in the very append that holds the seats;
when the desk refuses after all, the intent nobody was given is cancelled at Stripe."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from services.api.context import PURCHASES
from services.usecases.desk import Desk
from services.usecases.sales_desks import EVENT_INVENTORY
from tests.e2e.conftest import (
    cancelled_intents,
    chosen_seat_order,
    order,
    post,
    rebuild_read_models,
    small_event,
)


async def _rows(pool: asyncpg.Pool, stream: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT type, tx_id::text AS tx FROM events WHERE stream_id = $1 ORDER BY version", stream
    )


async def test_the_intent_is_stored_with_the_hold(api, pool: asyncpg.Pool, catalog) -> None:
    token, event_id, type_id = await small_event(pool, 4)
    for _ in range(2):  # the desk's first purchase reads its stream first, the second not
        _, created = await post(api, token, "/api/v1/purchases", order(type_id, 2), 201)
        payment = created["payment"]
        assert payment["stripe_client_secret"] and payment["stripe_payment_intent_id"]
        purchase = await _rows(pool, f"purchase-{created['purchase']['token']}")
        assert [r["type"] for r in purchase] == ["PurchaseOpened", "PaymentIntentCreated"]
        held = await pool.fetchval(
            "SELECT tx_id::text FROM events WHERE stream_id = $1 AND type = 'SeatsHeld'"
            " AND data->>'purchase_token' = $2",
            f"event-{event_id}",
            created["purchase"]["token"],
        )
        assert {r["tx"] for r in purchase} == {held}


async def test_an_intent_the_desk_then_refuses_is_cancelled(
    serve, pool: asyncpg.Pool, stripe_sim: TestClient, catalog
) -> None:
    """Two gateways: the first foresees a free seat its desk has not seen sold by the second,
    creates the intent, is refused by the event's stream and cancels the intent."""
    token, event_id, type_id = await small_event(pool, 2)
    first, second = await serve(), await serve()
    await post(first, token, "/api/v1/purchases", order(type_id, 1), 201)
    await post(second, token, "/api/v1/purchases", order(type_id, 1), 201)
    desk = first.app[PURCHASES].desks.get(f"event-{event_id}", EVENT_INVENTORY)
    assert len(desk.cached.state.taken) == 1  # it has not seen the second gateway's sale
    before = await cancelled_intents(stripe_sim)

    _, refused = await post(first, token, "/api/v1/purchases", order(type_id, 1), 409)
    assert refused["error"] in ("seats_taken", "insufficient_availability")
    deadline = time.monotonic() + 5
    while not (cancelled := await cancelled_intents(stripe_sim) - before):
        assert time.monotonic() < deadline, "the refused purchase's intent was not cancelled"
        await asyncio.sleep(0.05)
    assert len(cancelled) == 1
    opened = await pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'PurchaseOpened' AND data->>'event_id' = $1",
        str(event_id),
    )
    assert opened == 2


async def test_auto_select_prepares_the_desk(api, pool: asyncpg.Pool, catalog) -> None:
    """A buyer who asks for seats is about to buy: the gateway reads the event's stream then,
    not when a few hundred purchases arrive at once."""
    token, event_id, type_id = await small_event(pool, 3)
    await rebuild_read_models(pool)
    response, _ = await post(
        api, token, "/api/v1/events/show/seats/auto-select", {"ticket_type_id": type_id, "count": 1}
    )
    assert response.status == 200
    desk = api.app[PURCHASES].desks.get(f"event-{event_id}", EVENT_INVENTORY)
    deadline = time.monotonic() + 5
    while desk.cached.version == 0:
        assert time.monotonic() < deadline, "the desk never read the event's stream"
        await asyncio.sleep(0.02)


async def test_a_hold_taken_before_stripe_fails_is_released(serve, pool, catalog) -> None:
    """The other road: a gateway whose desk still sees the seat taken (another gateway has
    just given it back) holds it first; when Stripe then fails, the hold is released."""
    token, event_id, type_id = await small_event(pool, 1)
    broken, working = await serve(stripe_base="http://127.0.0.1:9"), await serve()
    _, first = await post(working, token, "/api/v1/purchases", order(type_id), 201)
    await post(broken, token, "/api/v1/purchases", order(type_id), 409)  # its desk sees it taken
    await post(working, token, f"/api/v1/purchases/{first['purchase']['token']}/cancel", {}, 200)
    _, failed = await post(broken, token, "/api/v1/purchases", order(type_id), 502)
    assert failed["error"] == "stripe_error"
    released = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'SeatsReleased'"
        " AND data->>'reason' = 'stripe_error'",
        f"event-{event_id}",
    )
    assert released == 1
    await post(working, token, "/api/v1/purchases", order(type_id), 201)


async def test_a_buyer_after_the_same_seat_waits_instead_of_paying_for_it(
    api, pool: asyncpg.Pool, stripe_sim: TestClient, catalog
) -> None:
    """Buyers at one gateway who chose the same seat at once: the later ones wait for the
    first one's purchase to be decided and are refused without a PaymentIntent, so Stripe
    sees no intent created only to be cancelled."""
    token, event_id, type_id = await small_event(pool, 3)
    await post(api, token, "/api/v1/purchases", order(type_id, 1), 201)  # the desk reads
    chosen = await chosen_seat_order(pool, event_id, type_id, 3)
    before = await cancelled_intents(stripe_sim)

    answers = await asyncio.gather(
        *(post(api, token, "/api/v1/purchases", chosen) for _ in range(4))
    )
    assert sorted(response.status for response, _ in answers) == [201, 409, 409, 409]
    await asyncio.sleep(0.3)  # a cancel would be made in the background
    assert await cancelled_intents(stripe_sim) - before == set()


async def test_buyers_leaving_the_seats_to_the_desk_are_decided_together(
    api, pool: asyncpg.Pool, catalog
) -> None:
    """Buyers who do not choose their seats claim none while paying first: a burst of them at
    one gateway is decided in a few appends, not one after another."""
    token, event_id, type_id = await small_event(pool, 30)
    await post(api, token, "/api/v1/purchases", order(type_id, 1), 201)  # the desk reads
    answers = await asyncio.gather(
        *(post(api, token, "/api/v1/purchases", order(type_id, 1)) for _ in range(20))
    )
    assert [response.status for response, _ in answers] == [201] * 20
    appends = await pool.fetchval(
        "SELECT count(DISTINCT tx_id::text) FROM events"
        " WHERE stream_id = $1 AND type = 'SeatsHeld'",
        f"event-{event_id}",
    )
    assert appends <= 11, appends


@pytest.mark.parametrize("lost", ["before_storing", "after_storing"])
async def test_a_retry_after_an_outage_gets_an_intent_it_can_pay(
    api, pool: asyncpg.Pool, stripe_sim: TestClient, catalog, monkeypatch, lost: str
) -> None:
    """The database goes away while the purchase that paid first is appended (stored or not,
    the gateway cannot tell): the 503's retry under the same Idempotency-Key keeps the token,
    and Stripe answers its intent again by that key. That intent must still be payable: it was
    cancelled as if no buyer could ever see it, and the retry's 201 named an intent nobody
    could pay."""
    token, _, type_id = await small_event(pool, 2)
    await post(api, token, "/api/v1/purchases", order(type_id, 1), 201)  # the desk has read
    original = Desk._append

    async def cut_off(self: Desk, *args: Any) -> None:
        monkeypatch.setattr(Desk, "_append", original)
        if lost == "after_storing":
            await original(self, *args)
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in mid-operation")

    monkeypatch.setattr(Desk, "_append", cut_off)
    key = {"Idempotency-Key": f"outage-{lost}-{time.monotonic_ns()}"}
    _, failed = await post(api, token, "/api/v1/purchases", order(type_id, 1), 503, **key)
    assert failed["error"] == "service_unavailable"
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, 1), 201, **key)
    intent = created["payment"]["stripe_payment_intent_id"]
    await asyncio.sleep(0.3)  # time for a cancel in the background, were one made
    assert intent not in await cancelled_intents(stripe_sim)
    paid = await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")
    assert paid.status == 200, await paid.text()
