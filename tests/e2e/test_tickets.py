"""Tickets after payment, over HTTP: verify and scan verdicts for every state, one admission
among concurrent scans, and buyer self-service with its uniform 404s and edit rules."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from domain.catalog import DEFAULT_TIMEZONE
from tests.e2e.conftest import (
    BUYER,
    bearer,
    buyer_bundle,
    order,
    post,
    rebuild_read_models,
    small_attraction,
    small_event,
)


async def _paid_purchase(api, pool: asyncpg.Pool, seats: int = 3, **extra) -> tuple[str, dict]:
    """A free (so at once paid) purchase of `seats` tickets on a fresh organization."""
    token, _, type_id = await small_event(pool, seats + 2, price=0, stripe_account=None)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, seats, **extra), 201)
    await rebuild_read_models(pool)
    return token, created["purchase"]


async def _verify(api, token: str, code: str, status: int = 200) -> dict:
    response = await api.get(f"/api/v1/tickets/{code}/verify", headers=bearer(token))
    body = await response.json()
    assert response.status == status, body
    return body


async def test_scan_admits_once_and_verify_never_changes_anything(api, pool) -> None:
    token, purchase = await _paid_purchase(api, pool)
    code = purchase["tickets"][0]["ticket_code"]
    for _ in range(2):
        verdict = await _verify(api, token, f"  {code.lower()} ")
        assert verdict["valid"] is True and verdict["reason"] == "ok"
        assert verdict["ticket"]["scan_count"] == 0 and verdict["ticket"]["status"] == "valid"
    _, first = await post(api, token, f"/api/v1/tickets/{code}/scan", {}, 200)
    assert first["valid"] is True and first["ticket"]["status"] == "scanned"
    assert first["ticket"]["scan_count"] == 1
    _, second = await post(api, token, f"/api/v1/tickets/{code}/scan", {}, 200)
    assert (second["valid"], second["reason"]) == (False, "already_scanned")
    assert (await _verify(api, token, code))["reason"] == "already_scanned"
    scans = await pool.fetch(
        "SELECT metadata FROM events WHERE type = 'TicketScanned' AND stream_id = $1",
        f"ticket-{purchase['tickets'][0]['id']}",
    )
    assert len(scans) == 1 and '"api_key_id"' in scans[0]["metadata"]


async def test_a_gate_retrying_its_scan_under_a_key_is_admitted_again(api, pool) -> None:
    """A gate whose `ok` was lost on the way (its connection dropped) retries with the same
    Idempotency-Key and gets its own `ok` again, not `already_scanned` for its own scan;
    another gate, or one without the key, still gets `already_scanned`."""
    token, purchase = await _paid_purchase(api, pool)
    code = purchase["tickets"][0]["ticket_code"]
    key = {"Idempotency-Key": "gate-3-scan-1"}
    _, first = await post(api, token, f"/api/v1/tickets/{code}/scan", {}, 200, **key)
    retry = await api.post(
        f"/api/v1/tickets/{code}/scan", json={}, headers={**bearer(token), **key}
    )
    assert (retry.status, retry.headers.get("Idempotent-Replay")) == (200, "true")
    assert await retry.json() == first and first["reason"] == "ok"
    other = {"Idempotency-Key": "gate-4-scan-1"}
    _, second = await post(api, token, f"/api/v1/tickets/{code}/scan", {}, 200, **other)
    assert (second["valid"], second["reason"]) == (False, "already_scanned")


async def test_concurrent_scans_admit_exactly_one(serve, pool) -> None:
    gateways = [await serve(), await serve()]
    token, purchase = await _paid_purchase(gateways[0], pool, seats=1)
    code = purchase["tickets"][0]["ticket_code"]

    async def scan(i: int) -> tuple[bool, str]:
        response = await gateways[i % 2].post(f"/api/v1/tickets/{code}/scan", headers=bearer(token))
        body = await response.json()
        return body["valid"], body["reason"]

    results = Counter(await asyncio.gather(*(scan(i) for i in range(40))))
    assert results == {(True, "ok"): 1, (False, "already_scanned"): 39}


async def test_unpaid_cancelled_and_foreign_tickets(api, pool, demo_token) -> None:
    token, _, type_id = await small_event(pool, 4)
    _, pending = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    _, doomed = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    await post(api, token, f"/api/v1/purchases/{doomed['purchase']['token']}/cancel", {}, 200)
    await rebuild_read_models(pool)
    pending_code = pending["purchase"]["tickets"][0]["ticket_code"]
    verdict = await _verify(api, token, pending_code)
    assert (verdict["valid"], verdict["reason"]) == (False, "pending_payment")
    _, scan = await post(api, token, f"/api/v1/tickets/{pending_code}/scan", {}, 200)
    assert scan["reason"] == "pending_payment"
    cancelled = await _verify(api, token, doomed["purchase"]["tickets"][0]["ticket_code"])
    assert cancelled["reason"] == "cancelled"
    assert (await _verify(api, demo_token, pending_code, 404))["error"] == "not_found"
    assert (await _verify(api, token, "NOSUCHCODE12", 404))["error"] == "not_found"


async def test_buyer_lookup_is_a_uniform_404(api, pool) -> None:
    token, purchase = await _paid_purchase(api, pool)
    code = purchase["access_code"]
    ok = await api.get(
        f"/api/v1/tickets/{code}", params={"email": BUYER["email"].upper()}, headers=bearer(token)
    )
    bundle = await ok.json()
    assert ok.status == 200, bundle
    assert bundle["code"] == code and bundle["order"]["status"] == "paid"
    seats = bundle["lines"][0]["seats"]
    assert len(seats) == 3 and all(len(s["token"]) >= 16 for s in seats)
    misses = [
        (code, "someone@else.dk"),
        ("ZZZZZZZZ", BUYER["email"]),
        ("ZZZZZZZZ", "someone@else.dk"),
    ]
    bodies = []
    for miss_code, email in misses:
        response = await api.get(
            f"/api/v1/tickets/{miss_code}", params={"email": email}, headers=bearer(token)
        )
        assert response.status == 404
        bodies.append(await response.json())
    assert len({str(b) for b in bodies}) == 1
    missing_email = await api.get(f"/api/v1/tickets/{code}", headers=bearer(token))
    assert missing_email.status == 422


async def test_the_buyers_pages_show_the_attendees_named_at_purchase(api, pool) -> None:
    token, _, type_id = await small_event(pool, 5, price=0, stripe_account=None)
    named = {"ticket_type_id": type_id, "index": 2, "name": "Maja Hansen", "email": "m@example.com"}
    _, created = await post(
        api, token, "/api/v1/purchases", order(type_id, 3, attendees=[named]), 201
    )
    code = created["purchase"]["access_code"]
    lookup = await api.get(
        f"/api/v1/tickets/{code}", params={"email": BUYER["email"]}, headers=bearer(token)
    )
    seats = (await lookup.json())["lines"][0]["seats"]
    assert [(s["name"], s["email"]) for s in seats] == [
        (BUYER["name"], BUYER["email"]),
        ("Maja Hansen", "m@example.com"),
        (None, None),
    ]


async def test_bulk_attendee_edits(api, pool) -> None:
    token, purchase = await _paid_purchase(api, pool)
    code = purchase["access_code"]
    lookup = await api.get(
        f"/api/v1/tickets/{code}", params={"email": BUYER["email"]}, headers=bearer(token)
    )
    seats = (await lookup.json())["lines"][0]["seats"]
    # The event asks for a name, which the buyer's stands for until an attendee's is given.
    assert not any(s["needs_personalization"] for s in seats)
    # The buyer's pages show the first seat as the buyer's own and the others as nobody's
    # (the spec's example: an unnamed seat's name and e-mail are null).
    assert [(s["name"], s["email"]) for s in seats] == [
        (BUYER["name"], BUYER["email"]),
        (None, None),
        (None, None),
    ]
    unnamed = await api.get(f"/api/v1/tickets/attendee/{seats[2]['token']}", headers=bearer(token))
    assert (await unnamed.json())["attendee"] == {"name": None, "email": None}
    edits = {
        "email": BUYER["email"],
        "seats": [
            {"token": seats[0]["token"], "name": "Maja", "email": "maja@example.com"},
            {"token": seats[1]["token"], "name": "", "email": None},
            {"token": "tok_" + "0" * 32, "name": "Nobody", "email": None},
        ],
    }
    response = await api.patch(f"/api/v1/tickets/{code}", json=edits, headers=bearer(token))
    body = await response.json()
    assert response.status == 200, body
    after = {s["token"]: s for s in body["lines"][0]["seats"]}
    assert (after[seats[0]["token"]]["name"], after[seats[0]["token"]]["email"]) == (
        "Maja",
        "maja@example.com",
    )
    assert after[seats[0]["token"]]["needs_personalization"] is False
    assert (after[seats[1]["token"]]["name"], after[seats[1]["token"]]["email"]) == (None, None)
    assert after[seats[1]["token"]]["needs_personalization"] is True  # its name was cleared
    assert (after[seats[2]["token"]]["name"], after[seats[2]["token"]]["email"]) == (None, None)

    view = await api.get(f"/api/v1/tickets/attendee/{seats[0]['token']}", headers=bearer(token))
    attendee = await view.json()
    assert attendee["attendee"] == {"name": "Maja", "email": "maja@example.com"}
    assert code not in str(attendee) and seats[1]["token"] not in str(attendee)
    assert attendee["orderStatus"] == "paid"

    wrong = await api.patch(
        f"/api/v1/tickets/{code}", json=edits | {"email": "x@y.dk"}, headers=bearer(token)
    )
    assert wrong.status == 404


async def test_every_seat_edit_is_checked_even_one_passed_over(api, pool) -> None:
    """A token not on the order, or an edit a later one of its seat replaces, changes nothing,
    but its bad fields are refused as any seat's are: a 422 naming the field."""
    token, purchase = await _paid_purchase(api, pool, seats=1)
    code = purchase["access_code"]
    lookup = await api.get(
        f"/api/v1/tickets/{code}", params={"email": BUYER["email"]}, headers=bearer(token)
    )
    (seat,) = (await lookup.json())["lines"][0]["seats"]
    stranger = "tok_" + "0" * 32
    refused = [
        ([{"token": stranger, "name": "a\u202eb", "email": None}], "seats[0].name"),
        (
            [{"token": stranger, "name": "Bo", "email": None, "consumer": {"gender": 7}}],
            "seats[0].consumer.gender",
        ),
        (
            [
                {"token": seat["token"], "name": "a\u202eb", "email": None},
                {"token": seat["token"], "name": "Good", "email": None},
            ],
            "seats[0].name",
        ),
    ]
    for seats, field in refused:
        response = await api.patch(
            f"/api/v1/tickets/{code}",
            json={"email": BUYER["email"], "seats": seats},
            headers=bearer(token),
        )
        body = await response.json()
        assert (response.status, body["error"]) == (422, "invalid_request"), body
        assert body["detail"].startswith(field), body
    after = await api.get(
        f"/api/v1/tickets/{code}", params={"email": BUYER["email"]}, headers=bearer(token)
    )
    assert (await after.json())["lines"][0]["seats"][0]["name"] == BUYER["name"]


async def test_an_attraction_visit_starts_with_its_day(api, pool) -> None:
    """The buyer's lookup and the attendee view say which day a museum ticket is for: its
    `startsAt` is the visit day's local midnight in the organization's zone."""
    token, type_id = await small_attraction(pool, price=0, daily_max=10, stripe_account=None)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    body = {"attraction_slug": "museum", "quantities": {str(type_id): 1}, "buyer": BUYER}
    _, created = await post(api, token, "/api/v1/purchases", body | {"visit_date": str(day)}, 201)
    lookup = await api.get(
        f"/api/v1/tickets/{created['purchase']['access_code']}",
        params={"email": BUYER["email"]},
        headers=bearer(token),
    )
    (line,) = (await lookup.json())["lines"]
    midnight = datetime.combine(day, time(), tzinfo=ZoneInfo(DEFAULT_TIMEZONE))
    assert datetime.fromisoformat(line["event"]["startsAt"]) == midnight
    (seat,) = line["seats"]
    view = await api.get(f"/api/v1/tickets/attendee/{seat['token']}", headers=bearer(token))
    assert (await view.json())["event"]["startsAt"] == line["event"]["startsAt"]


async def test_the_last_edit_of_a_seat_named_twice_wins(api, pool) -> None:
    """Also when the last puts back the name the seat has: the earlier edit is not made."""
    token, purchase = await _paid_purchase(api, pool, seats=1)
    code = purchase["access_code"]
    lookup = await api.get(
        f"/api/v1/tickets/{code}", params={"email": BUYER["email"]}, headers=bearer(token)
    )
    (seat,) = (await lookup.json())["lines"][0]["seats"]
    for names in (["Orig"], ["Changed", "Orig"], ["Changed", "Third"]):
        edits = [{"token": seat["token"], "name": name, "email": None} for name in names]
        response = await api.patch(
            f"/api/v1/tickets/{code}",
            json={"email": BUYER["email"], "seats": edits},
            headers=bearer(token),
        )
        body = await response.json()
        assert response.status == 200, body
        assert body["lines"][0]["seats"][0]["name"] == names[-1]


@pytest.mark.parametrize(
    "edits",
    [
        {"seats": []},
        {"seats": [{"token": "short", "name": "A", "email": None}]},
        {"seats": [{"token": "tok_" + "1" * 32, "name": "A" * 201, "email": None}]},
        {"seats": [{"token": "tok_" + "1" * 32, "name": "A", "email": "not-an-email"}]},
        {"seats": [{"token": "tok_" + "1" * 32, "name": "A", "email": None}] * 201},
    ],
)
async def test_bad_attendee_edits_are_422(api, pool, edits: dict) -> None:
    token, purchase = await _paid_purchase(api, pool, seats=1)
    response = await api.patch(
        f"/api/v1/tickets/{purchase['access_code']}",
        json={"email": BUYER["email"], **edits},
        headers=bearer(token),
    )
    assert response.status == 422, await response.text()


async def test_edits_on_a_cancelled_order_are_409(api, pool) -> None:
    token, _, type_id = await small_event(pool, 2)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]
    await post(api, token, f"/api/v1/purchases/{purchase['token']}/cancel", {}, 200)
    await rebuild_read_models(pool)
    response = await api.patch(
        f"/api/v1/tickets/{purchase['access_code']}",
        json={
            "email": BUYER["email"],
            "seats": [
                {"token": purchase["tickets"][0]["ticket_code"] * 2, "name": "A", "email": None}
            ],
        },
        headers=bearer(token),
    )
    assert response.status == 409


async def _seat_tokens(api, token: str, purchase: dict) -> list[str]:
    bundle = await buyer_bundle(api, token, purchase)
    return [s["token"] for line in bundle["lines"] for s in line["seats"]]


async def _order_status(api, token: str, seat_token: str) -> str:
    view = await api.get(f"/api/v1/tickets/attendee/{seat_token}", headers=bearer(token))
    body = await view.json()
    assert view.status == 200, body
    return body["orderStatus"]


async def test_the_attendee_view_tells_the_orders_state(api, pool) -> None:
    """A seat's token matches its ticket before the order is paid and after it is cancelled:
    the view says which (`orderStatus`) rather than a 404."""
    token, event_id, type_id = await small_event(pool, 2)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    purchase = created["purchase"]
    [seat_token] = await _seat_tokens(api, token, purchase)
    assert await _order_status(api, token, seat_token) == "pending_payment"
    product = {"id": str(event_id), "name": "Show", "slug": "show", "image": None}
    assert (await buyer_bundle(api, token, purchase))["lines"][0]["product"] == product
    view = await api.get(f"/api/v1/tickets/attendee/{seat_token}", headers=bearer(token))
    assert (await view.json())["product"] == product  # ids are strings, as the spec's are
    await post(api, token, f"/api/v1/purchases/{purchase['token']}/cancel", {}, 200)
    assert await _order_status(api, token, seat_token) == "cancelled"


async def test_a_wholly_refunded_order_is_no_longer_active(api, pool) -> None:
    token, purchase = await _paid_purchase(api, pool, seats=2)
    await post(api, token, f"/api/v1/purchases/{purchase['token']}/refund", {}, 201)
    seat_tokens = await _seat_tokens(api, token, purchase)
    assert await _order_status(api, token, seat_tokens[0]) == "refunded"
    edit = {
        "email": BUYER["email"],
        "seats": [{"token": seat_tokens[0], "name": "A", "email": None}],
    }
    response = await api.patch(
        f"/api/v1/tickets/{purchase['access_code']}", json=edit, headers=bearer(token)
    )
    assert response.status == 409
    assert await response.json() == {"error": "order_inactive", "detail": "the order is refunded"}


async def test_an_edit_of_every_seat_leaves_a_refunded_one_as_it_is(api, pool) -> None:
    """A buyer's page sends back every seat of the order: after one ticket is refunded the
    others are still named, and the refunded one is left alone; an edit of that one only is
    refused."""
    token, purchase = await _paid_purchase(api, pool, seats=2)
    refunded_id = purchase["tickets"][0]["id"]
    body = {"ticket_ids": [refunded_id]}
    await post(api, token, f"/api/v1/purchases/{purchase['token']}/refund", body, 201)
    seats = (await buyer_bundle(api, token, purchase))["lines"][0]["seats"]
    statuses = {s["token"]: s["status"] for s in seats}
    edits = [{"token": s["token"], "name": "Ny Navn", "email": None} for s in seats]
    path = f"/api/v1/tickets/{purchase['access_code']}"
    edited = await api.patch(
        path, json={"email": BUYER["email"], "seats": edits}, headers=bearer(token)
    )
    after = await edited.json()
    assert edited.status == 200, after
    names = {s["token"]: s["name"] for s in after["lines"][0]["seats"]}
    for seat_token, status in statuses.items():
        assert (names[seat_token] == "Ny Navn") is (status != "refunded"), (status, names)
    [gone] = [e for e in edits if statuses[e["token"]] == "refunded"]
    alone = await api.patch(
        path, json={"email": BUYER["email"], "seats": [gone]}, headers=bearer(token)
    )
    assert alone.status == 409
    assert (await alone.json())["error"] == "personalization_closed"


async def test_attendee_view_of_another_organization_is_404(api, pool, demo_token) -> None:
    token, purchase = await _paid_purchase(api, pool, seats=1)
    lookup = await api.get(
        f"/api/v1/tickets/{purchase['access_code']}",
        params={"email": BUYER["email"]},
        headers=bearer(token),
    )
    seat_token = (await lookup.json())["lines"][0]["seats"][0]["token"]
    foreign = await api.get(f"/api/v1/tickets/attendee/{seat_token}", headers=bearer(demo_token))
    assert foreign.status == 404


async def test_purchase_payload_carries_the_ticket_resource(api, pool) -> None:
    token, purchase = await _paid_purchase(api, pool, seats=2)
    code = purchase["tickets"][0]["ticket_code"]
    await post(api, token, f"/api/v1/tickets/{code}/scan", {}, 200)
    response = await api.get(f"/api/v1/purchases/{purchase['token']}", headers=bearer(token))
    first, second = (await response.json())["purchase"]["tickets"]
    assert (first["ticket_status"], first["is_scanned"], first["scan_count"]) == (
        "scanned",
        True,
        1,
    )
    assert (second["ticket_status"], second["is_scanned"]) == ("valid", False)
    assert first["consumer"] == {"name": BUYER["name"], "email": BUYER["email"]}
    assert first["scannable_until"] > first["personalization_end"]
    # Scanned, it can no longer be personalized; the other is named after its buyer.
    assert (first["needs_personalization"], second["needs_personalization"]) == (False, False)
    # The e-ticket link opens without the partner's key, as the ticket resource's does.
    eticket = first["eticket_url"]
    pdf = await api.get(eticket[eticket.index("/eticket/") :])
    assert pdf.status == 200 and pdf.content_type == "application/pdf"
