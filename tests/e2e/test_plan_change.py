"""A venue's plan changed by its organizer: the catalog read model, the purchases' cached seat
map and the open seat planners all follow, and seats already sold cannot be planned away."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from domain import venues
from domain.errors import InvalidCommand
from infra.embed_tokens import TOKEN_SECONDS
from services.api.embed_pages import SIGNER
from services.usecases import catalog_commands
from tests.e2e.conftest import TEST, bearer, order, post, rebuild_read_models
from tests.e2e.test_embeds import ORIGINS, Scene, _buy, _next_event, _scene


@pytest.fixture
async def scene(pool: asyncpg.Pool, catalog: dict[str, int]) -> Scene:
    return await _scene(pool, ORIGINS)


def _hall(section_id: int, rows: list[venues.Row]) -> venues.PlannedSection:
    return venues.PlannedSection(id=section_id, name="Sal", width=10.0, height=10.0, rows=rows)


async def _plan_event(stream, seconds: float) -> dict[str, str]:
    """Waits for `event: plan`, skipping the taken seats sent meanwhile: its links."""
    while (found := await _next_event(stream, seconds))[0] != "plan":
        assert found[0] == "taken"
    return found[1]


async def test_an_open_planner_reloads_the_changed_plan_and_sales_follow_it(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    # A page opened 15 minutes ago, less two seconds: its token lapses while it is open.
    opened = datetime.now(UTC) - timedelta(seconds=TOKEN_SECONDS - 2)
    token, _ = api.app[SIGNER].mint(
        "planner", scene.event_id, scene.organization_id, scene.key_id, opened
    )
    stream = await api.get(f"/embed/api/live?token={token}")
    try:
        assert (await _next_event(stream, 5))[0] == "taken"
        await asyncio.sleep(2.5)
        sold = await _buy(api, scene, 3)
        await rebuild_read_models(pool)
        section_id = sold["section_id"]

        shorter = venues.ChangeSeatPlan(
            sections=[_hall(section_id, [venues.Row(identifier="A", start=4, end=20)])]
        )
        with pytest.raises(InvalidCommand):
            await catalog_commands.change_seat_plan(
                pool, scene.organization_id, scene.venue_id, shorter, TEST
            )

        rows = [
            venues.Row(identifier="A", start=1, end=20),
            venues.Row(identifier="B", start=1, end=10),
        ]
        balcony = venues.PlannedSection(
            name="Balkon", seating_mode="standing", width=5.0, height=2.0, standing_capacity=40
        )
        bigger = venues.ChangeSeatPlan(sections=[_hall(section_id, rows), balcony])
        assert await catalog_commands.change_seat_plan(
            pool, scene.organization_id, scene.venue_id, bigger, TEST
        )
        await rebuild_read_models(pool)
        links = await _plan_event(stream, 5)
    finally:
        stream.close()

    assert (await api.get(f"/embed/api/plan?token={token}")).status == 401
    assert set(links) == {"plan_url", "live_url"}
    plan = await (await api.get(links["plan_url"])).json()
    hall, standing = plan["sections"]
    assert hall["id"] == section_id and [r["identifier"] for r in hall["rows"]] == ["A", "B"]
    assert hall["capacity"] == 30 and standing["name"] == "Balkon"
    assert (await catalog_commands.load_venue(pool, scene.venue_id)).sections[1].name == "Balkon"

    seat = {"section_id": section_id, "row": "B", "seat_number": 10}
    body = order(scene.type_id, 1, selected_seats={str(scene.type_id): [seat]})
    await post(api, scene.token, "/api/v1/purchases", body, 201)
    venue = await (
        await api.get(f"/api/v1/venues/{scene.venue_id}", headers=bearer(scene.token))
    ).json()
    assert (venue["venue"]["seated_capacity"], venue["venue"]["standing_capacity"]) == (30, 40)


async def test_a_section_the_events_sell_from_cannot_leave_the_plan(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    """No seat is held, but the events' ticket types sell from the hall: a plan without it, or
    with it standing, is refused naming the type, and the event is still sold as before."""
    section_id = (await catalog_commands.load_venue(pool, scene.venue_id)).sections[0].id
    row = venues.Row(identifier="A", start=1, end=20)
    foyer = venues.PlannedSection(name="Foyer", width=10.0, height=10.0, rows=[row])
    standing = venues.PlannedSection(
        id=section_id,
        name="Sal",
        seating_mode="standing",
        width=10.0,
        height=10.0,
        standing_capacity=50,
    )
    for plan in ([foyer], [standing]):
        with pytest.raises(InvalidCommand, match=f"section {section_id} .* sold by ticket type"):
            await catalog_commands.change_seat_plan(
                pool, scene.organization_id, scene.venue_id, venues.ChangeSeatPlan(plan), TEST
            )
    assert [s.id for s in (await catalog_commands.load_venue(pool, scene.venue_id)).sections] == [
        section_id
    ]
    shown = await api.get("/api/v1/events/show/availability", headers=bearer(scene.token))
    assert (await shown.json())["ticket_types"] == {str(scene.type_id): 20}
    await post(api, scene.token, "/api/v1/purchases", order(scene.type_id, 2), 201)


async def test_a_seat_held_a_moment_ago_cannot_be_planned_away(
    api, pool: asyncpg.Pool, scene: Scene
) -> None:
    """The held seats were read from the availability read model: a hold it had not applied
    yet (here it is not projected at all) was planned away, and the seat sold was in no plan.
    They are read from the event's stream, and the change is stored only at the version read."""
    sold = await _buy(api, scene, 1)
    shorter = venues.ChangeSeatPlan(
        sections=[_hall(sold["section_id"], [venues.Row(identifier="A", start=2, end=20)])]
    )
    with pytest.raises(InvalidCommand):
        await catalog_commands.change_seat_plan(
            pool, scene.organization_id, scene.venue_id, shorter, TEST
        )
    rows = (await catalog_commands.load_venue(pool, scene.venue_id)).sections[0].rows
    assert [(r.identifier, r.start, r.end) for r in rows] == [("A", 1, 20)]
