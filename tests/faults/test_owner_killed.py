"""The gateway that owns an event's sales desk dies in the middle of an on-sale (its NATS
connection cut, no more requests reach it): the other gateway takes the event over, every
purchase acknowledged with a 201 is stored once, and no seat is sold twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from tests.e2e.conftest import Start, routed, small_event  # noqa: F401  (fixture)
from tests.e2e.test_desk_affinity import buy, held_seats

SEATS = 60
BUYERS = 6
KILL_AFTER = 15


async def test_a_killed_owner_hands_its_event_over(
    pool: asyncpg.Pool,
    routed: Start,  # noqa: F811
) -> None:
    token, event_id, type_id = await small_event(pool, SEATS)
    owner, other = await routed(), await routed()
    status, body, _ = await buy(owner, token, type_id)
    assert status == 201, body
    created = [body["purchase"]["token"]]
    refused: Counter[str] = Counter()
    alive = [owner, other]

    async def kill() -> None:
        alive.remove(owner)
        await owner.nc.close()

    async def buyer(n: int) -> None:
        for attempt in range(SEATS):
            gateway = alive[(n + attempt) % len(alive)]
            status, body, _ = await buy(gateway, token, type_id)
            if status != 201:
                refused[body["error"]] += 1
                return
            created.append(body["purchase"]["token"])
            if len(created) == KILL_AFTER:
                await kill()

    await asyncio.gather(*(buyer(n) for n in range(BUYERS)))

    assert owner not in alive
    assert set(refused) == {"insufficient_availability"}
    assert len(created) == SEATS
    assert await other.owners.owner_of(f"event-{event_id}") == other.owners.me
    opened = await pool.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE type = 'PurchaseOpened'"
        " AND stream_id = ANY($1) GROUP BY stream_id",
        [f"purchase-{t}" for t in created],
    )
    assert {r["stream_id"]: r["n"] for r in opened} == {f"purchase-{t}": 1 for t in created}
    held = await held_seats(pool, event_id)
    assert len(held) == SEATS and set(held.values()) == {1}
