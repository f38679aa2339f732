"""Two gateways on one NATS, each with its own sales desks, as two processes: whichever gateway
takes a purchase, the desk of the one that owns the event's stream decides it, so the desks
never conflict, and the events still name the request and the key that caused them."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from services.usecases import desk_owners
from tests.e2e.conftest import (
    Routed,
    Start,
    bearer,
    cancelled_intents,
    chosen_seat_order,
    order,
    small_event,
)


async def buy(
    gateway: Routed, token: str, type_id: int, body: dict | None = None
) -> tuple[int, dict, str]:
    """One seat, chosen by the desk unless `body` names it: (status, body, the request id)."""
    request_id = f"req-{uuid.uuid4().hex}"
    response = await gateway.client.post(
        "/api/v1/purchases",
        json=body or order(type_id, 1),
        headers={**bearer(token), "X-Request-ID": request_id},
    )
    return response.status, await response.json(), request_id


async def held_seats(pool: asyncpg.Pool, event_id: int) -> Counter[tuple[str, str, str]]:
    """Every seat the event's stream holds, counted per hold."""
    rows = await pool.fetch(
        "SELECT s->>'section_id' AS section, s->>'row' AS row, s->>'seat_number' AS number"
        " FROM events, jsonb_array_elements(data->'seats') AS s"
        " WHERE stream_id = $1 AND type = 'SeatsHeld'",
        f"event-{event_id}",
    )
    return Counter((r["section"], r["row"], r["number"]) for r in rows)


async def opened_by_request(pool: asyncpg.Pool, tokens: list[str]) -> dict[str, tuple[str, str]]:
    """Each purchase's opening: the request id and API key id recorded with it."""
    rows = await pool.fetch(
        "SELECT stream_id, metadata->>'request_id' AS request, metadata->>'api_key_id' AS key"
        " FROM events WHERE type = 'PurchaseOpened' AND stream_id = ANY($1)",
        [f"purchase-{t}" for t in tokens],
    )
    return {r["stream_id"].removeprefix("purchase-"): (r["request"], r["key"]) for r in rows}


async def intents_recorded(pool: asyncpg.Pool, tokens: list[str]) -> dict[str, str]:
    """Each purchase's PaymentIntent as its stream records it (a second one would fail)."""
    rows = await pool.fetch(
        "SELECT stream_id, data->>'intent_id' AS intent FROM events"
        " WHERE type = 'PaymentIntentCreated' AND stream_id = ANY($1)",
        [f"purchase-{t}" for t in tokens],
    )
    intents = {r["stream_id"].removeprefix("purchase-"): r["intent"] for r in rows}
    assert len(intents) == len(rows), "a purchase recorded two PaymentIntents"
    return intents


async def test_purchases_at_two_gateways_are_decided_by_one_desk(
    pool: asyncpg.Pool, routed: Start
) -> None:
    seats = 40
    token, event_id, type_id = await small_event(pool, seats)
    first, second = await routed(), await routed()
    # The first purchase makes its gateway the owner; the rest alternate, ten at a time.
    status, body, request_id = await buy(first, token, type_id)
    assert status == 201, body
    answers = [(first, status, body, request_id)]
    for _ in range((seats - 1) // 10 + 1):
        batch = [(first if i % 2 else second) for i in range(10)]
        results = await asyncio.gather(*(buy(g, token, type_id) for g in batch))
        answers += [(g, *r) for g, r in zip(batch, results, strict=True)]
    created = [(g, body, rid) for g, status, body, rid in answers if status == 201]
    refused = [body["error"] for _, status, body, _ in answers if status != 201]

    assert len(created) == seats
    assert refused and set(refused) == {"insufficient_availability"}
    assert first.sales.desks.conflicts == 0
    assert second.sales.desks.conflicts == 0
    assert await second.owners.owner_of(f"event-{event_id}") == first.owners.me
    held = await held_seats(pool, event_id)
    assert len(held) == seats and set(held.values()) == {1}
    # Decided at the owner, recorded with the request and key of the gateway that took it.
    tokens = [body["purchase"]["token"] for _, body, _ in created]
    recorded = await opened_by_request(pool, tokens)
    key_ids = {api_key for _, api_key in recorded.values()}
    assert len(key_ids) == 1
    for _, body, request_id in created:
        assert recorded[body["purchase"]["token"]][0] == request_id
    assert any(g is second for g, _, _ in created)
    # Each buyer can pay, whichever gateway took the request: one PaymentIntent per purchase.
    assert all(body["payment"]["stripe_client_secret"] for _, body, _ in created)
    assert await intents_recorded(pool, tokens) == {
        body["purchase"]["token"]: body["payment"]["stripe_payment_intent_id"]
        for _, body, _ in created
    }


@pytest.mark.parametrize("chosen", [False, True], ids=["desk_chooses", "buyer_chooses"])
async def test_an_owner_answering_too_late_opens_no_second_purchase(
    pool: asyncpg.Pool,
    routed: Start,
    stripe_sim: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    chosen: bool,
) -> None:
    """The gateway that took the request gives up waiting at once and decides the same draft
    itself, while the owner decides it too: one purchase per draft, and the answer is it. A
    buyer's own seats are then refused as taken (by that very purchase): the intent the
    refused decision created is still the purchase's, not cancelled."""
    token, event_id, type_id = await small_event(pool, 30)
    owner, other = await routed(), await routed()
    status, body, _ = await buy(
        owner, token, type_id, await chosen_seat_order(pool, event_id, type_id, 30)
    )
    assert status == 201, body
    monkeypatch.setattr(desk_owners, "ASK_SECONDS", 0.0001)
    bodies = [
        await chosen_seat_order(pool, event_id, type_id, n) if chosen else None
        for n in range(1, 11)
    ]
    results = await asyncio.gather(*(buy(other, token, type_id, b) for b in bodies))
    await owner.owners.close()  # answers every command it took first

    tokens = [body["purchase"]["token"]] + [
        b["purchase"]["token"] for status, b, _ in results if status == 201
    ]
    assert [status for status, _, _ in results] == [201] * 10, results
    opened = await pool.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE type = 'PurchaseOpened'"
        " AND stream_id = ANY($1) GROUP BY stream_id",
        [f"purchase-{t}" for t in tokens],
    )
    assert {r["stream_id"]: r["n"] for r in opened} == {f"purchase-{t}": 1 for t in tokens}
    rows = await pool.fetch(
        "SELECT data->>'purchase_token' AS token FROM events"
        " WHERE stream_id = $1 AND type = 'SeatsHeld'",
        f"event-{event_id}",
    )
    holds = Counter(r["token"] for r in rows)
    assert holds == Counter({t: 1 for t in tokens})
    # Both desks created the PaymentIntent of a draft (one key: one intent); the one whose
    # decision came second leaves it alone, as it is the purchase's: every buyer can pay.
    intents = await intents_recorded(pool, tokens)
    assert set(intents) == set(tokens)
    await other.sales.close()  # its background work (a cancel it might have sent) is done
    for intent in intents.values():
        paid = await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")
        assert paid.status == 200, await paid.text()


async def test_an_owner_that_does_not_answer_is_not_asked_again_until_its_lease_lapses(
    pool: asyncpg.Pool, routed: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled owner (SIGSTOP) made every purchase at the other gateway wait the full five
    seconds for it, one after another, until its lease ran out."""
    token, event_id, type_id = await small_event(pool, 10)
    owner, other = await routed(), await routed()
    stream = f"event-{event_id}"
    assert (await buy(owner, token, type_id))[0] == 201
    assert await other.owners.owner_of(stream) == owner.owners.me
    monkeypatch.setattr(desk_owners, "ASK_SECONDS", 0.0001)
    monkeypatch.setattr(desk_owners, "LEASE_SECONDS", 0.5)
    assert (await buy(other, token, type_id))[0] == 201
    assert await other.owners.owner_of(stream) == other.owners.me
    await asyncio.sleep(0.6)  # the lease a stalled owner could not renew would have lapsed
    assert await other.owners.owner_of(stream) == owner.owners.me  # it renewed: asked again
    await owner.owners.close()


async def test_a_gateway_that_stops_hands_its_events_to_another(
    pool: asyncpg.Pool, routed: Start
) -> None:
    """A rolling restart: the owner stops (giving its leases up), and the next purchase taken
    by the other gateway makes that one the owner, with nothing to conflict with."""
    token, event_id, type_id = await small_event(pool, 10)
    first, second = await routed(), await routed()
    for gateway in (first, second):
        status, body, _ = await buy(gateway, token, type_id)
        assert status == 201, body
    stream = f"event-{event_id}"
    assert await second.owners.owner_of(stream) == first.owners.me

    await first.owners.close()
    status, body, _ = await buy(second, token, type_id)

    assert status == 201, body
    assert await second.owners.owner_of(stream) == second.owners.me
    assert second.sales.desks.conflicts == 0
    assert len(await held_seats(pool, event_id)) == 3


async def test_a_routed_buyer_of_a_seat_being_paid_for_at_the_owner_waits(
    pool: asyncpg.Pool, routed: Start, stripe_sim: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buyers at both gateways choose the same seat while the owner's own buyer is paying
    first for it (Stripe slow to answer): a purchase routed to the owner waits for that one
    to be decided, so no PaymentIntent is created only to be cancelled."""
    token, event_id, type_id = await small_event(pool, 3)
    first, second = await routed(), await routed()
    assert (await buy(first, token, type_id))[0] == 201  # the first gateway owns the event
    payments = first.sales.intents.payments
    assert payments is not None and payments is not second.sales.intents.payments
    create_intent = payments.create_intent

    async def slow_create_intent(**kwargs: object) -> object:
        await asyncio.sleep(0.3)
        return await create_intent(**kwargs)

    monkeypatch.setattr(payments, "create_intent", slow_create_intent)
    chosen = await chosen_seat_order(pool, event_id, type_id, 3)
    before = await cancelled_intents(stripe_sim)

    async def choose(gateway: Routed) -> int:
        response = await gateway.client.post(
            "/api/v1/purchases", json=chosen, headers=bearer(token)
        )
        return response.status

    paying = asyncio.ensure_future(choose(first))
    await asyncio.sleep(0.1)  # the owner's buyer is waiting for Stripe
    statuses = await asyncio.gather(paying, *(choose(second) for _ in range(3)))
    assert statuses == [201, 409, 409, 409]
    await asyncio.sleep(0.3)  # a cancel would be made in the background
    assert await cancelled_intents(stripe_sim) - before == set()
