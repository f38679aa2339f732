"""Reads never contradict an acknowledged write (DESIGN invariant 4): what a purchase hands out
(ticket codes, the access code, attendee tokens) works the moment the purchase is acknowledged,
with no projector running, and auto-select passes over seats the event's stream holds though
the availability read model has not caught up.

In these tests the read models move only when a test rebuilds them (tests/e2e/conftest.py), so
"no projector" is the state every purchase below is checked in; each test shows it by asserting
the read model has not seen the purchase."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from services.api.seating import DESK_IN_STEP_SECONDS
from tests.e2e.conftest import BUYER, bearer, order, post, rebuild_read_models, small_event


async def _get(api, token: str, path: str, status: int = 200, **params: str) -> Any:
    response = await api.get(path, params=params, headers=bearer(token))
    body = await response.read()
    assert response.status == status, body
    return await response.json() if response.content_type == "application/json" else body


async def _gate(api, token: str, code: str, action: str) -> str:
    if action == "verify":
        body = await _get(api, token, f"/api/v1/tickets/{code}/verify")
    else:
        _, body = await post(api, token, f"/api/v1/tickets/{code}/scan", {}, 200)
    return body["reason"]


async def _paid(api, token: str, purchase: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await _get(api, token, f"/api/v1/purchases/{purchase}"))["purchase"]
        if body["status"] == "paid":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"purchase {purchase} never got paid")


async def _projected(pool: asyncpg.Pool, codes: list[str]) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM rm_tickets.tickets WHERE code = ANY($1)", codes
    )


async def test_codes_work_at_the_gate_and_for_the_buyer_before_any_projection(
    api, pool, stripe_sim
) -> None:
    token, _, type_id = await small_event(pool, 4)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, 2), 201)
    purchase = created["purchase"]
    codes = [t["ticket_code"] for t in purchase["tickets"]]
    assert await _projected(pool, codes) == 0

    for action in ("verify", "scan", "verify"):
        assert await _gate(api, token, codes[0], action) == "pending_payment"
    shown = (await _get(api, token, f"/api/v1/purchases/{purchase['token']}"))["purchase"]
    assert await _gate(api, token, shown["tickets"][1]["ticket_code"], "scan") == "pending_payment"

    intent = created["payment"]["stripe_payment_intent_id"]
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200
    await _paid(api, token, purchase["token"])
    assert await _projected(pool, codes) == 0

    assert await _gate(api, token, codes[0].lower(), "verify") == "ok"
    access = purchase["access_code"]
    bundle = await _get(api, token, f"/api/v1/tickets/{access}", email=BUYER["email"].upper())
    seats = bundle["lines"][0]["seats"]
    assert sorted(s["ticket_code"] for s in seats) == sorted(codes)
    await _get(api, token, f"/api/v1/tickets/{access}", 404, email="someone@else.dk")
    edit = {"email": BUYER["email"], "seats": [{"token": seats[0]["token"], "name": "Maja"}]}
    edit["seats"][0]["email"] = None
    response = await api.patch(f"/api/v1/tickets/{access}", json=edit, headers=bearer(token))
    edited = await response.json()
    assert response.status == 200, edited
    names = {s["token"]: s["name"] for s in edited["lines"][0]["seats"]}
    assert names[seats[0]["token"]] == "Maja"
    attendee = await _get(api, token, f"/api/v1/tickets/attendee/{seats[0]['token']}")
    assert attendee["attendee"]["name"] == "Maja"
    pdf = await _get(api, token, f"/api/v1/purchases/{purchase['token']}/tickets/pdf")
    assert pdf.startswith(b"%PDF")

    assert [await _gate(api, token, codes[0], "scan") for _ in range(2)] == [
        "ok",
        "already_scanned",
    ]
    assert await _gate(api, token, codes[1], "scan") == "ok"
    scans = await pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'TicketScanned' AND stream_id = ANY($1)",
        [f"ticket-{t['id']}" for t in purchase["tickets"]],
    )
    assert scans == 2
    assert await _projected(pool, codes) == 0


async def _section(pool: asyncpg.Pool, event_id: int) -> int:
    found = await pool.fetchval(
        "SELECT data->'ticket_types'->0->'section_ids'->>0 FROM events"
        " WHERE stream_id = $1 AND version = 1",
        f"event-{event_id}",
    )
    return int(found)


def _seats(section_id: int, numbers: range) -> list[dict[str, Any]]:
    return [{"section_id": section_id, "row": "A", "seat_number": n} for n in numbers]


async def test_auto_select_passes_over_seats_held_since_the_read_model_last_moved(
    serve, api, pool
) -> None:
    token, event_id, type_id = await small_event(pool, 8)
    await rebuild_read_models(pool)
    section_id = await _section(pool, event_id)
    path = "/api/v1/events/show/seats/auto-select"

    async def offered(gateway) -> list[int]:
        _, body = await post(gateway, token, path, {"ticket_type_id": type_id, "count": 2}, 200)
        return sorted(s["seat_number"] for s in body["seats"])

    middle = _seats(section_id, range(3, 7))
    body = order(type_id, 4, selected_seats={str(type_id): middle})
    await post(api, token, "/api/v1/purchases", body, 201)
    first = await offered(api)
    assert not set(first) & {3, 4, 5, 6}

    # Another gateway sells the rest; this one's desk reads the stream once it is out of step.
    other = await serve()
    rest = [n for n in range(1, 9) if n not in {3, 4, 5, 6}]
    body = order(type_id, 4, selected_seats={str(type_id): _seats(section_id, rest)})
    await post(other, token, "/api/v1/purchases", body, 201)
    await asyncio.sleep(DESK_IN_STEP_SECONDS + 0.1)
    assert await offered(api) == []
    taken = await pool.fetchval(
        "SELECT count(*) FROM rm_availability.taken_seats WHERE event_id = $1", event_id
    )
    assert taken == 0
