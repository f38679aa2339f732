"""A buyer and a gate, as a fault test drives them: buy, pay at the simulator, scan every ticket
twice, and keep the score of what was acknowledged, so the test can check afterwards that
nothing was lost and nothing happened twice."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg

from tests.e2e.conftest import bearer, order, post


@dataclass
class Score:
    """What the service acknowledged: purchases by token, and the ticket ids paid for."""

    paid: dict[str, list[int]] = field(default_factory=dict)
    pending: dict[str, list[int]] = field(default_factory=dict)


async def gate(api, token: str, code: str) -> str:
    _, body = await post(api, token, f"/api/v1/tickets/{code}/scan", {}, 200)
    return body["reason"]


async def wait_paid(api, token: str, purchase: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await api.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
        if (await response.json())["purchase"]["status"] == "paid":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"purchase {purchase} never got paid")


async def sell_and_admit(api, stripe_sim, token: str, type_id: int, score: Score) -> None:
    """One paid purchase of two tickets, one left unpaid; every ticket scanned twice at once
    after the payment: a paid ticket is admitted once, an unpaid one never."""
    _, paying = await post(api, token, "/api/v1/purchases", order(type_id, 2), 201)
    _, unpaid = await post(api, token, "/api/v1/purchases", order(type_id, 1), 201)
    intent = paying["payment"]["stripe_payment_intent_id"]
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200
    await wait_paid(api, token, paying["purchase"]["token"])
    for created, admitted in ((paying, "ok"), (unpaid, "pending_payment")):
        purchase = created["purchase"]
        for ticket in purchase["tickets"]:
            first = await gate(api, token, ticket["ticket_code"])
            again = await gate(api, token, ticket["ticket_code"])
            assert first == admitted, (purchase["token"], first)
            assert again == ("already_scanned" if admitted == "ok" else admitted)
        kept = score.paid if admitted == "ok" else score.pending
        kept[purchase["token"]] = [t["id"] for t in purchase["tickets"]]


async def assert_admitted_once(pool: asyncpg.Pool, score: Score) -> None:
    """The event store holds each acknowledged purchase once, one scan per paid ticket, none
    for an unpaid one."""
    tokens = [*score.paid, *score.pending]
    opened = await pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'PurchaseOpened' AND stream_id = ANY($1)",
        [f"purchase-{t}" for t in tokens],
    )
    assert opened == len(tokens)
    rows = await pool.fetch(
        "SELECT stream_id, count(*) FROM events WHERE type = 'TicketScanned'"
        " AND stream_id = ANY($1) GROUP BY stream_id",
        [f"ticket-{i}" for ids in (*score.paid.values(), *score.pending.values()) for i in ids],
    )
    scanned = {r[0]: r[1] for r in rows}
    assert scanned == {f"ticket-{i}": 1 for ids in score.paid.values() for i in ids}
