"""The embeddable seat planner and editor in a real browser, framed by a partner's page: the
postMessage protocol, the selection cap and reset, live taken seats, the frame-ancestors gate,
tampered tokens, and an editor whose edits never reach the stored plan."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg

from domain import venues
from infra.embed_tokens import TOKEN_SECONDS
from services.api.embed_pages import SIGNER
from services.usecases import catalog_commands
from tests.browser.conftest import Partners, Stage, next_message, received_count
from tests.e2e.conftest import BUYER, TEST, bearer, post, rebuild_read_models

FREE_SEAT = "[data-seat]:not(.taken)"


async def _mint_planner(api, stage: Stage) -> dict[str, Any]:
    response, body = await post(
        api, stage.key, "/api/v1/embed/seat-planner", {"event_slug": "show"}
    )
    assert response.status in (200, 201), body
    return body["embed"]


async def _open(page: Any, partner: str, url: str) -> Any:
    """The partner page on `partner` framing `url`; the frame's locator."""
    await page.goto(f"{partner}/?src={quote(url, safe='')}")
    return page.frame_locator("#embed")


async def _ready_planner(page: Any, partners: Partners, url: str) -> tuple[Any, dict]:
    frame = await _open(page, partners.allowed, url)
    await frame.locator("[data-ready=true]").wait_for(timeout=10_000)
    return frame, await next_message(page, "linjerum:ready")


def _seat(data_seat: str) -> dict[str, Any]:
    section, row, number = data_seat.split(":")
    return {"section_id": int(section), "row": row, "seat_number": int(number)}


async def _pick(frame: Any, count: int) -> list[dict[str, Any]]:
    """Clicks the first `count` free seats; the seats they stand for."""
    seats = frame.locator(FREE_SEAT)
    picked = []
    for index in range(count):
        seat = seats.nth(index)
        picked.append(_seat(await seat.get_attribute("data-seat")))
        await seat.click()
    return picked


async def test_the_planner_loads_on_an_allowed_origin_and_says_ready(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    embed = await _mint_planner(api, stage)
    assert embed["expires_in"] == 900
    assert embed["event"] == {"id": stage.event_id, "slug": "show", "name": "Show"}
    _, ready = await _ready_planner(page, partners, embed["url"])
    assert ready["event_id"] == stage.event_id
    assert ready["event_slug"] == "show"
    assert ready["event_name"] == "Show"
    assert ready["max_selections"] is None
    assert ready["currency"] == "DKK"


async def test_two_clicked_seats_are_reported_together(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    frame, _ = await _ready_planner(page, partners, (await _mint_planner(api, stage))["url"])
    picked = await _pick(frame, 2)
    changed = await next_message(page, "linjerum:seats-changed", lambda m: len(m["seats"]) == 2)
    assert sorted(changed["seats"], key=str) == sorted(picked, key=str)
    assert await frame.locator("[data-seat].selected").count() == 2
    assert await frame.locator("[data-seat][aria-checked=true]").count() == 2


async def test_a_seat_past_the_cap_says_full(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    url = (await _mint_planner(api, stage))["url"] + "&max=1"
    frame, ready = await _ready_planner(page, partners, url)
    assert ready["max_selections"] == 1
    await _pick(frame, 2)
    full = await next_message(page, "linjerum:full")
    assert full["max_selections"] == 1
    assert await frame.locator("[data-seat].selected").count() == 1


async def test_reset_from_the_partner_clears_the_selection(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    frame, _ = await _ready_planner(page, partners, (await _mint_planner(api, stage))["url"])
    await _pick(frame, 2)
    await next_message(page, "linjerum:seats-changed", lambda m: len(m["seats"]) == 2)
    before = await received_count(page)
    await page.evaluate(
        "document.getElementById('embed').contentWindow.postMessage({type: 'linjerum:reset'}, '*')"
    )
    await next_message(page, "linjerum:seats-changed", lambda m: m["seats"] == [], after=before)
    assert await frame.locator("[data-seat].selected").count() == 0


async def test_a_seat_sold_meanwhile_turns_taken_and_leaves_the_selection(
    api, pool: asyncpg.Pool, stage: Stage, partners: Partners, page: Any
) -> None:
    frame, _ = await _ready_planner(page, partners, (await _mint_planner(api, stage))["url"])
    [seat] = await _pick(frame, 1)
    await next_message(page, "linjerum:seats-changed", lambda m: m["seats"] == [seat])
    before = await received_count(page)
    purchase = {
        "event_slug": "show",
        "quantities": {str(stage.type_id): 1},
        "selected_seats": {str(stage.type_id): [seat]},
        "buyer": BUYER,
    }
    await post(api, stage.key, "/api/v1/purchases", purchase, 201)
    await rebuild_read_models(pool)
    sold = frame.locator(f'[data-seat="{seat["section_id"]}:{seat["row"]}:{seat["seat_number"]}"]')
    await sold.and_(frame.locator(".taken[aria-disabled=true]")).wait_for(timeout=3_000)
    await next_message(
        page, "linjerum:seats-changed", lambda m: seat not in m["seats"], after=before, timeout=3
    )


async def test_a_page_on_a_foreign_origin_cannot_frame_the_planner(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    embed = await _mint_planner(api, stage)
    async with page.expect_response(lambda r: "/embed/seat-planner" in r.url) as served:
        await _open(page, partners.foreign, embed["url"])
    response = await served.value
    assert response.status == 200
    assert partners.foreign not in response.headers["content-security-policy"]
    await asyncio.sleep(2)
    for frame in page.frames[1:]:
        assert (
            frame.url.startswith("chrome-error:")
            or await frame.query_selector("[data-ready]") is None
        ), frame.url
    assert await page.evaluate("window.messages.length") == 0


async def test_a_tampered_token_shows_the_error_page(api, stage: Stage, page: Any) -> None:
    url = (await _mint_planner(api, stage))["url"]
    head, token = url.split("token=", 1)
    middle = len(token) // 2
    forged = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    response = await page.goto(f"{head}token={forged}")
    assert 400 <= response.status < 500
    assert await page.locator("[data-seat]").count() == 0
    assert "text/html" in response.headers["content-type"]


async def test_the_editor_gets_dirty_but_never_saves(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    plan_path = f"/api/v1/venues/{stage.venue_id}/seat-plan?event_id={stage.event_id}"
    stored = await (await api.get(plan_path, headers=bearer(stage.key))).json()
    response, body = await post(
        api, stage.key, "/api/v1/embed/seat-plan-editor", {"venue_id": stage.venue_id}
    )
    assert response.status in (200, 201), body
    assert body["embed"]["venue"] == {"id": stage.venue_id, "name": "Sal"}
    frame = await _open(page, partners.allowed, body["embed"]["url"])
    await frame.locator("[data-ready=true]").wait_for(timeout=10_000)
    ready = await next_message(page, "linjerum:ready")
    assert ready["unsaved_changes"] is False
    assert ready["venue"]["id"] == stage.venue_id
    await frame.locator("[data-section] [data-seat]").first.click()
    await frame.locator("[data-action=add-row]").click()
    dirty = await next_message(page, "linjerum:editor-dirty")
    assert dirty["unsaved_changes"] is True
    await asyncio.sleep(0.5)
    assert await (await api.get(plan_path, headers=bearer(stage.key))).json() == stored


async def test_a_planner_open_past_its_tokens_life_still_reloads_a_changed_plan(
    api, pool: asyncpg.Pool, stage: Stage, partners: Partners, page: Any
) -> None:
    """The token lives 15 minutes; the page may stay open for hours. Its stream hands it fresh
    links, so a plan changed after the token lapsed is still read and drawn."""
    opened = datetime.now(UTC) - timedelta(seconds=TOKEN_SECONDS - 3)
    token, _ = api.app[SIGNER].mint(
        "planner", stage.event_id, stage.organization_id, stage.key_id, opened
    )
    minted = (await _mint_planner(api, stage))["url"]
    frame, _ = await _ready_planner(page, partners, minted.split("token=")[0] + f"token={token}")
    await asyncio.sleep(3.5)
    [section] = (await catalog_commands.load_venue(pool, stage.venue_id)).sections
    rows = [
        venues.Row(identifier=row, start=1, end=6, row_position_y=24.0 * index)
        for index, row in enumerate(("A", "B", "C"))
    ]
    hall = venues.PlannedSection(id=section.id, name="Sal", width=160.0, height=90.0, rows=rows)
    await catalog_commands.change_seat_plan(
        pool, stage.organization_id, stage.venue_id, venues.ChangeSeatPlan(sections=[hall]), TEST
    )
    await rebuild_read_models(pool)
    await frame.locator(f'[data-seat="{section.id}:C:1"]').wait_for(timeout=10_000)


async def test_keyboard_focus_stays_in_view_on_a_zoomed_plan(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    frame, _ = await _ready_planner(page, partners, (await _mint_planner(api, stage))["url"])
    for _ in range(3):
        await frame.locator("button[aria-label='Zoom in']").click()
    await frame.locator(FREE_SEAT).first.focus()
    for _ in range(5):
        await page.keyboard.press("ArrowRight")
        focused = frame.locator("[data-seat]:focus")
        seat, plan = await focused.bounding_box(), await frame.locator("svg.plan").bounding_box()
        assert seat is not None and plan is not None
        x, y = seat["x"] + seat["width"] / 2, seat["y"] + seat["height"] / 2
        assert plan["x"] <= x <= plan["x"] + plan["width"], (seat, plan)
        assert plan["y"] <= y <= plan["y"] + plan["height"], (seat, plan)


async def test_the_editor_renames_a_seat_by_keyboard_and_refuses_a_twin(
    api, stage: Stage, partners: Partners, page: Any
) -> None:
    _, body = await post(
        api, stage.key, "/api/v1/embed/seat-plan-editor", {"venue_id": stage.venue_id}
    )
    frame = await _open(page, partners.allowed, body["embed"]["url"])
    await frame.locator("[data-ready=true]").wait_for(timeout=10_000)
    await frame.locator("[data-section]").first.focus()
    await page.keyboard.press("Enter")  # the section
    await page.keyboard.press("Enter")  # into its seats
    first = await frame.locator("[data-seat]:focus").get_attribute("data-seat")
    await page.keyboard.press("ArrowRight")
    second = await frame.locator("[data-seat]:focus").get_attribute("data-seat")
    assert first and second and first != second
    await page.keyboard.press("Enter")
    seat_name = frame.locator("#rename-seat")
    assert await seat_name.is_enabled()
    assert await seat_name.input_value() == second.split(":")[2]
    await seat_name.fill(first.split(":")[2])
    await frame.locator("[data-action=rename]").click()
    status = frame.locator("p.status")
    assert "already has a seat" in await status.text_content()
    await seat_name.fill("X9")
    await frame.locator("[data-action=rename]").click()
    assert await status.text_content() == "Renamed."
    label = await frame.locator(f'[data-seat="{second}"]').get_attribute("aria-label")
    assert label is not None and label.endswith("seat X9")
