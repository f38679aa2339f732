"""The gates right after an on-sale: every ticket whose payment Stripe confirmed scans at once,
with no projector running (in these tests the read models move only when a test rebuilds them,
tests/e2e/conftest.py), while a crowd of gates on two gateways scans together: their reads and
their scans are batched (services/usecases/ticketing.py's Gate), and no code may be answered
for another, refused, or admitted twice; the buyer's page, polled again, shows them scanned."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg

from tests.e2e.conftest import bearer, order, post, small_event

PURCHASES = 8
TICKETS_EACH = 3


async def _paid(api, token: str, purchase: str, timeout: float = 20.0) -> None:
    """Polls the purchase as a buyer's page does, until it shows `paid_at`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await api.get(f"/api/v1/purchases/{purchase}", headers=bearer(token))
        body = await response.json()
        assert response.status == 200, body
        if body["purchase"]["paid_at"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"purchase {purchase} never showed paid_at")


async def _scan(gateway, token: str, code: str) -> tuple[int, Any]:
    response = await gateway.post(f"/api/v1/tickets/{code}/scan", headers=bearer(token))
    return response.status, await response.json()


async def test_paid_tickets_scan_at_once_among_many_gates(
    serve, api, pool: asyncpg.Pool, stripe_sim, demo_token: str
) -> None:
    token, _, type_id = await small_event(pool, PURCHASES * TICKETS_EACH + 1)
    created = await asyncio.gather(
        *(
            post(api, token, "/api/v1/purchases", order(type_id, TICKETS_EACH), 201)
            for _ in range(PURCHASES)
        )
    )
    _, unpaid = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    for _, body in created:
        intent = body["payment"]["stripe_payment_intent_id"]
        assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200
    await asyncio.gather(*(_paid(api, token, body["purchase"]["token"]) for _, body in created))
    codes = [t["ticket_code"] for _, body in created for t in body["purchase"]["tickets"]]
    projected = await pool.fetchval(
        "SELECT count(*) FROM rm_tickets.tickets WHERE code = ANY($1)", codes
    )
    assert projected == 0

    # Every code twice, on two gateways, with an unpaid ticket, an unknown code and another
    # organization's gate among them.
    gateways = [api, await serve()]
    pending = unpaid["purchase"]["tickets"][0]["ticket_code"]
    scans = [(gateways[i % 2], token, code) for i, code in enumerate(codes * 2)]
    scans += [(api, token, pending), (api, token, "NOSUCHCODE42"), (api, demo_token, codes[0])]
    answers = await asyncio.gather(*(_scan(*scan) for scan in scans))

    verdicts: dict[str, Counter[str]] = {code: Counter() for code in codes}
    for (_, _, code), (status, body) in zip(scans[: 2 * len(codes)], answers, strict=False):
        assert status == 200, body
        assert body["ticket"]["code"] == code
        verdicts[code][body["reason"]] += 1
    assert all(v == {"ok": 1, "already_scanned": 1} for v in verdicts.values()), verdicts
    (pending_status, pending_body), (unknown, _), (foreign, _) = answers[-3:]
    assert (pending_status, pending_body["reason"]) == (200, "pending_payment")
    assert (unknown, foreign) == (404, 404)
    stored = await pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'TicketScanned' AND stream_id = ANY($1)",
        [f"ticket-{t['id']}" for _, body in created for t in body["purchase"]["tickets"]],
    )
    assert stored == len(codes)

    # The buyer's page, polled again, shows its tickets scanned; to another organization it
    # is not found, though this gateway has seen it before.
    first = created[0][1]["purchase"]["token"]
    response = await api.get(f"/api/v1/purchases/{first}", headers=bearer(token))
    shown = (await response.json())["purchase"]["tickets"]
    assert [(t["is_scanned"], t["scan_count"]) for t in shown] == [(True, 1)] * TICKETS_EACH
    response = await api.get(f"/api/v1/purchases/{first}", headers=bearer(demo_token))
    assert response.status == 404
