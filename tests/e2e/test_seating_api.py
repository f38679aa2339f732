"""The seat planner's helpers over HTTP: auto-select offers free seats in the ticket type's own
sections, validate reports exactly the seats that holds took, and bad bodies, foreign events
and unseated ticket types are refused with the spec's errors.

The database is shared with the other e2e tests, which hold seats of their own: expectations
on the demo event are relative to the taken seats the read model shows, and this module's own
holds sit in a back row of a side balcony and are released again at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.payload import BytesPayload

from domain import catalog as c
from domain import venues
from domain.inventory.events import HeldSeat, SeatsHeld, SeatsReleased
from infra.eventstore import ANY_VERSION, PendingAppend, append
from services.dev.sample_event import put_on_sale
from services.usecases import catalog_commands
from tests.e2e.conftest import (
    TEST,
    bearer,
    issue_key,
    new_organization,
    order,
    rebuild_read_models,
    small_event,
    venue_with,
)

HAMLET = "/api/v1/events/hamlet-2026"
AUTO_SELECT = HAMLET + "/seats/auto-select"
VALIDATE = HAMLET + "/seats/validate"
LAB = "/api/v1/events/saedelab"


async def _call(api, token: str, method: str, path: str, status: int = 200, **kwargs) -> Any:
    response = await api.request(method, path, headers=bearer(token), **kwargs)
    body = await response.json()
    assert response.status == status, body
    return body


async def _post(api, token: str, path: str, body: Any, status: int = 200) -> Any:
    return await _call(api, token, "POST", path, status, json=body)


def _key(seat: dict[str, Any]) -> tuple[int, str, int]:
    return (seat["section_id"], seat["row"], seat["seat_number"])


async def _hamlet(api, token: str) -> tuple[dict[str, Any], set[tuple[int, str, int]]]:
    """The event's ticket types by name, and the seats its read model shows as taken."""
    event = await _call(api, token, "GET", HAMLET)
    availability = await _call(api, token, "GET", HAMLET + "/availability")
    types = {t["name"]: t for t in event["ticket_types"]}
    return types, {_key(s) for s in availability["sold_seats"]}


async def test_auto_select_offers_free_adjacent_seats_in_the_types_sections(
    api, demo_token
) -> None:
    types, taken = await _hamlet(api, demo_token)
    for ticket_type in types.values():
        body = await _post(
            api, demo_token, AUTO_SELECT, {"ticket_type_id": ticket_type["id"], "count": 2}
        )
        assert set(body) == {"seats", "count", "requested"}
        assert body["count"] == len(body["seats"]) == body["requested"] == 2
        (first, second) = seats = [_key(s) for s in body["seats"]]
        assert {s[0] for s in seats} <= set(ticket_type["section_ids"])
        assert not set(seats) & taken
        assert first[:2] == second[:2] and second[2] == first[2] + 1


async def _hold(pool: asyncpg.Pool, event_id: int, token: str, seats: list[HeldSeat]) -> None:
    counts = {seats[0].ticket_type_id: len(seats)}
    held = SeatsHeld(
        event_id=event_id,
        purchase_token=token,
        seats=seats,
        counts=counts,
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
    )
    await append(pool, [PendingAppend(f"event-{event_id}", ANY_VERSION, [held])], TEST)
    await rebuild_read_models(pool)


async def _release(pool: asyncpg.Pool, event_id: int, token: str, seats: list[HeldSeat]) -> None:
    released = SeatsReleased(
        event_id=event_id,
        purchase_token=token,
        seats=seats,
        counts={seats[0].ticket_type_id: len(seats)},
        reason="test over",
    )
    await append(pool, [PendingAppend(f"event-{event_id}", ANY_VERSION, [released])], TEST)
    await rebuild_read_models(pool)


async def test_buyers_asking_at_once_are_offered_different_seats(api, demo_token) -> None:
    """Best-available is deterministic; without spreading, every buyer of an on-sale would be
    offered the same block and all but one refused when they buy it."""
    types, taken = await _hamlet(api, demo_token)
    body = {"ticket_type_id": types["Voksen"]["id"], "count": 4}
    offers = await asyncio.gather(*(_post(api, demo_token, AUTO_SELECT, body) for _ in range(3)))
    chosen = [{_key(s) for s in offer["seats"]} for offer in offers]
    assert all(len(seats) == 4 and not seats & taken for seats in chosen)
    assert not (chosen[0] & chosen[1] or chosen[0] & chosen[2] or chosen[1] & chosen[2])


async def test_held_seats_are_the_conflicts_and_auto_select_avoids_them(
    api, demo_token, pool: asyncpg.Pool
) -> None:
    types, taken = await _hamlet(api, demo_token)
    event_id = (await _call(api, demo_token, "GET", HAMLET))["event"]["id"]
    senior = types["Pensionist"]
    right_balcony = senior["section_ids"][-1]
    numbers = (8, 9, 10, 12)
    held = [
        HeldSeat(section_id=right_balcony, row="F", seat_number=n, ticket_type_id=senior["id"])
        for n in numbers
    ]
    wanted = [{"section_id": right_balcony, "row": "F", "seat_number": n} for n in (*numbers, 1)]
    assert not {_key(s) for s in wanted} & taken, "another test holds seats in this row"
    selection = {"selected_seats": {str(senior["id"]): wanted}}
    assert await _post(api, demo_token, VALIDATE, selection) == {"available": True}

    await _hold(pool, event_id, "seating-api-hold", held)
    try:
        assert await _post(api, demo_token, VALIDATE, selection) == {
            "available": False,
            "conflicts": wanted[:4],
        }
        near = {"section_id": right_balcony, "row": "F", "seat_number": 11}
        body = await _post(
            api,
            demo_token,
            AUTO_SELECT,
            {"ticket_type_id": senior["id"], "count": 3, "near": [near]},
        )
        _, now_taken = await _hamlet(api, demo_token)
        chosen = {_key(s) for s in body["seats"]}
        assert len(chosen) == 3 and not chosen & now_taken and _key(near) not in chosen
        assert {k[:2] for k in chosen} == {(right_balcony, "F")}
    finally:
        await _release(pool, event_id, "seating-api-hold", held)
    # Released by another process than the gateway's sales desk (as the sweeper does): told
    # once the desk has read its stream again, within DESK_IN_STEP_SECONDS.
    for _ in range(40):
        if await _post(api, demo_token, VALIDATE, selection) == {"available": True}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the released seats were never shown free")


@pytest.fixture(scope="module")
async def lab(api, pool: asyncpg.Pool) -> dict[str, Any]:
    """An organization of its own (so the demo's listings stay as they are) with an event in a
    four-seat row, a standing floor and an unseated ticket type: its API key, its ticket type
    ids by name and its section ids."""
    org = await catalog_commands.register_organization(
        pool, c.RegisterOrganization(slug="saedelab", name="Sædelab", currency="DKK"), TEST
    )
    sections = [
        venues.SectionPlan(
            name="Sal", width=10.0, height=10.0, rows=[venues.Row(identifier="A", start=1, end=4)]
        ),
        venues.SectionPlan(
            name="Gulv", seating_mode="standing", width=10.0, height=10.0, standing_capacity=20
        ),
    ]
    venue_id = await catalog_commands.register_venue(
        pool, org, venues.RegisterVenue(key="saedelab", name="Sædelab", sections=sections), TEST
    )
    venue = await catalog_commands.load_venue(pool, venue_id)
    hall, floor = (s.id for s in venue.sections)
    await catalog_commands.schedule_event(
        pool,
        org,
        c.ScheduleEvent(
            slug="saedelab",
            name="Sædelab",
            venue_id=venue_id,
            event_date=datetime.now(UTC) + timedelta(days=10),
            publish=True,
            ticket_types=[
                c.TicketTypePlan(name="Sal", price_cents=100, section_ids=[hall]),
                c.TicketTypePlan(name="Gulv", price_cents=100, section_ids=[floor]),
                c.TicketTypePlan(name="Fri", price_cents=100, capacity=10),
            ],
        ),
        TEST,
    )
    await rebuild_read_models(pool)
    token = await issue_key(pool, org)
    listed = await _call(api, token, "GET", LAB)
    types = {t["name"]: t["id"] for t in listed["ticket_types"]}
    return {"token": token, "types": types, "hall": hall, "floor": floor}


async def test_auto_select_centres_the_party_and_returns_what_exists(api, lab) -> None:
    hall_type, path = lab["types"]["Sal"], LAB + "/seats/auto-select"
    two = await _post(api, lab["token"], path, {"ticket_type_id": hall_type, "count": 2})
    assert [s["seat_number"] for s in two["seats"]] == [2, 3]
    # Seats 2 and 3 were just offered; when no other seats are free they are offered again.
    many = await _post(api, lab["token"], path, {"ticket_type_id": hall_type, "count": 6})
    assert (many["count"], many["requested"]) == (4, 6)
    # More than a purchase may hold is still an answer: what exists, and the count asked.
    group = await _post(api, lab["token"], path, {"ticket_type_id": hall_type, "count": 40})
    assert (group["count"], group["requested"]) == (4, 40)
    assert many["seats"][0] == {"section_id": lab["hall"], "row": "A", "seat_number": 1}


@pytest.mark.parametrize("name", ["Gulv", "Fri"])
async def test_standing_and_unseated_types_have_no_seats_to_pick(api, lab, name: str) -> None:
    body = {"ticket_type_id": lab["types"][name], "count": 1}
    refused = await _post(api, lab["token"], LAB + "/seats/auto-select", body, 422)
    assert refused["error"] == "invalid_request"
    assert refused["detail"].startswith("ticket_type_id:")


async def test_a_standing_type_cannot_select_seats(api, lab) -> None:
    floor_type = lab["types"]["Gulv"]
    seat = {"section_id": lab["hall"], "row": "A", "seat_number": 1}
    body = {"selected_seats": {str(floor_type): [seat]}}
    refused = await _post(api, lab["token"], LAB + "/seats/validate", body, 422)
    assert refused["detail"].startswith(f"selected_seats.{floor_type}[0]:")


def _bad_auto_selects(types: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    """Bodies, each with the start of its 422 detail: the field, then a colon."""
    voksen = types["Voksen"]["id"]
    section = types["Voksen"]["section_ids"][0]
    yield {"count": 2}, "ticket_type_id:"
    yield {"ticket_type_id": voksen}, "count:"
    yield {"ticket_type_id": voksen, "count": 0}, "count:"
    yield {"ticket_type_id": voksen, "count": 1001}, "count:"
    yield {"ticket_type_id": voksen, "count": "2"}, "count:"
    yield {"ticket_type_id": 987654321, "count": 2}, "ticket_type_id:"
    yield {"ticket_type_id": voksen, "count": 2, "seat": 1}, "seat:"
    bogus = {"section_id": section, "row": "ZZ", "seat_number": 1}
    yield {"ticket_type_id": voksen, "count": 2, "near": [bogus]}, "near[0]:"
    yield {"ticket_type_id": voksen, "count": 2, "near": [{"section_id": section}]}, "near[0].row:"


def _bad_validations(types: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    """Bodies, each with the start of its 422 detail: the field, then a colon."""
    voksen, loge = str(types["Voksen"]["id"]), types["Loge"]
    seat = {"section_id": types["Voksen"]["section_ids"][0], "row": "A", "seat_number": 1}
    in_loge = {"section_id": loge["section_ids"][0], "row": "A", "seat_number": 1}
    outside = {**seat, "seat_number": 999}
    yield {}, "selected_seats:"
    yield {"selected_seats": []}, "selected_seats:"
    yield {"selected_seats": {"abc": [seat]}}, "selected_seats.abc:"
    yield {"selected_seats": {"045": [seat]}}, "selected_seats.045:"
    yield {"selected_seats": {"987654321": [seat]}}, "selected_seats.987654321:"
    yield {"selected_seats": {voksen: [seat, outside]}}, f"selected_seats.{voksen}[1]:"
    yield {"selected_seats": {voksen: [in_loge]}}, f"selected_seats.{voksen}[0]:"
    # The decoder cannot name a map's key, so a malformed seat object is placed with `[...]`.
    yield {"selected_seats": {voksen: [{"row": "A"}]}}, "selected_seats[...][0].section_id:"


async def test_bad_bodies_are_422_naming_the_field(api, demo_token) -> None:
    types, _ = await _hamlet(api, demo_token)
    cases = [(AUTO_SELECT, *case) for case in _bad_auto_selects(types)]
    cases += [(VALIDATE, *case) for case in _bad_validations(types)]
    for path, body, field in cases:
        refused = await _post(api, demo_token, path, body, 422)
        assert refused["error"] == "invalid_request", (path, body)
        assert refused["detail"].startswith(field), (path, body, refused)


@pytest.mark.parametrize("path", [AUTO_SELECT, VALIDATE])
@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"text"'])
async def test_malformed_json_is_422_on_the_body(api, demo_token, path: str, raw: bytes) -> None:
    await _refused_as_malformed(api, demo_token, path, raw)


MISTYPED = {AUTO_SELECT: b'{"ticket_type_id": "x"', VALIDATE: b'{"selected_seats": "x"'}


@pytest.mark.parametrize("path", [AUTO_SELECT, VALIDATE])
@pytest.mark.parametrize("end", [b"", b"} x", b', "c": "\xff"}'])
async def test_a_mistyped_field_in_broken_json_is_422_on_the_body(
    api, demo_token, path: str, end: bytes
) -> None:
    """The decoder refuses the field before it reaches the break (the JSON cut off, bytes after
    it, bytes that are not UTF-8): these were 500s."""
    await _refused_as_malformed(api, demo_token, path, MISTYPED[path] + end)


async def _refused_as_malformed(api, demo_token: str, path: str, raw: bytes) -> None:
    json_body = BytesPayload(raw, content_type="application/json")
    refused = await _call(api, demo_token, "POST", path, 422, data=json_body)
    assert refused["error"] == "invalid_request" and refused["detail"].startswith("body:")


@pytest.mark.parametrize("suffix", ["/seats/auto-select", "/seats/validate"])
async def test_other_organizations_drafts_and_unknown_events_are_not_found(
    api, demo_token, aarhus_token, lab, suffix: str
) -> None:
    types, _ = await _hamlet(api, demo_token)
    body: dict[str, Any] = {"selected_seats": {}}
    if suffix.endswith("auto-select"):
        body = {"ticket_type_id": types["Voksen"]["id"], "count": 1}
    await _post(api, demo_token, HAMLET + suffix, body)
    for token, slug in [
        (aarhus_token, "hamlet-2026"),
        (demo_token, "saedelab"),
        (demo_token, "en-folkefjende"),
        (demo_token, "maagen"),
        (demo_token, "no-such-event"),
    ]:
        refused = await _post(api, token, f"/api/v1/events/{slug}{suffix}", body, 404)
        assert refused == {"error": "not_found", "detail": "event not found"}


async def test_a_refused_purchase_gives_its_offered_seats_back(api, pool: asyncpg.Pool) -> None:
    """Seats offered to a buyer whose purchase was refused are offered again at once, not
    kept from everyone for the rest of the offer's 20 seconds."""
    token, _, type_id = await small_event(pool, 3)
    await rebuild_read_models(pool)
    path = "/api/v1/events/show/seats/auto-select"
    offered = (await _post(api, token, path, {"ticket_type_id": type_id, "count": 2}))["seats"]
    assert [s["seat_number"] for s in offered] == [1, 2]
    taken_by_another = order(type_id, selected_seats={str(type_id): offered[:1]})
    await _post(api, token, "/api/v1/purchases", taken_by_another, 201)
    refused = order(type_id, 2, selected_seats={str(type_id): offered})
    assert (await _post(api, token, "/api/v1/purchases", refused, 409))["error"] == "seats_taken"
    await rebuild_read_models(pool)
    again = (await _post(api, token, path, {"ticket_type_id": type_id, "count": 1}))["seats"]
    assert [s["seat_number"] for s in again] == [2]  # the centre, offered no more


async def test_near_seats_stay_in_their_row_though_its_seats_were_offered_to_another(
    api, pool: asyncpg.Pool
) -> None:
    """The spec: near seats, "same row first". Seats 3 and 5 beside a buyer's seat 4 were just
    offered to another buyer, and this buyer was moved to another row for it."""
    org = await new_organization(pool)
    rows = [venues.Row(identifier=name, start=1, end=7) for name in ("A", "B")]
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=rows)
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=10000, max_per_purchase=20)
    _, type_id = await put_on_sale(pool, org, venue_id, plan, TEST)
    token = await issue_key(pool, org)
    await rebuild_read_models(pool)
    path = "/api/v1/events/show/seats/auto-select"
    first = (await _post(api, token, path, {"ticket_type_id": type_id, "count": 7}))["seats"]
    assert {(s["row"], s["seat_number"]) for s in first} == {("A", n) for n in range(1, 8)}
    mine = {**first[3], "row": "A", "seat_number": 4}
    body = {"ticket_type_id": type_id, "count": 1, "near": [mine]}
    near = (await _post(api, token, path, body))["seats"]
    assert [(s["row"], s["seat_number"]) for s in near] in ([("A", 3)], [("A", 5)])
    # Nor is a party split along the row: it sat at 1 and 7 while 3 and 5 were free.
    pair = (await _post(api, token, path, body | {"count": 2}))["seats"]
    assert [(s["row"], s["seat_number"]) for s in pair] == [("A", 3), ("A", 5)]
