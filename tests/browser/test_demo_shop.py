"""The demo partner shop bought from as a visitor would: its page frames the seat planner, its
backend mints the token, places the purchase with the picked seat and pays on the simulator,
and the page shows the ticket with a working PDF link."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from services.dev.demo_shop import PATH, ShopSettings, demo_shop
from tests.browser.conftest import Partners, Stage


@pytest.fixture
async def shop(api, stripe_sim, stage: Stage, partners: Partners) -> AsyncIterator[str]:
    """The shop on its own origin (in the stage key's allowed_origins), selling `show`."""
    gateway = str(api.make_url("")).rstrip("/")
    settings = ShopSettings(
        api_base=gateway,
        api_key=stage.key,
        simulator_base=str(stripe_sim.make_url("")).rstrip("/"),
        event_slug="show",
        embed_origin=gateway,
    )
    site = web.Application()
    site.add_subapp(PATH, demo_shop(settings))
    runner = web.AppRunner(site)
    await runner.setup()
    address = URL(partners.shop)
    await web.TCPSite(runner, address.host, address.port).start()
    yield partners.shop + PATH
    await runner.cleanup()


async def test_a_visitor_buys_a_seat_through_the_demo_shop(shop: str, page: Any) -> None:
    await page.goto(shop)
    assert "not part of the API" in await page.locator(".banner").inner_text()
    frame = page.frame_locator("#seat-planner")
    await frame.locator("[data-ready=true]").wait_for(timeout=10_000)
    seat = frame.locator("[data-seat]:not(.taken)").first
    _, row, number = (await seat.get_attribute("data-seat")).split(":")
    await seat.click()
    await page.locator("#continue:enabled").click(timeout=5_000)
    await page.locator("#pay:visible").click(timeout=10_000)
    ticket = page.locator("#ticket-list .ticket")
    await ticket.first.wait_for(timeout=20_000)
    assert await ticket.count() == 1
    assert f"row {row} seat {number}" in await ticket.first.inner_text()
    pdf = await page.request.get(shop.removesuffix(PATH) + await page.get_attribute("#pdf", "href"))
    assert pdf.status == 200
    assert (await pdf.body()).startswith(b"%PDF")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("api/purchases", "xx"),
        ("api/purchases", "[]"),
        ("api/purchases", '{"seats": [1]}'),
        ("api/purchases", '{"seats": "A1"}'),
        ("api/purchases/abc/pay", "xx"),
        ("api/purchases/abc/pay", '{"payment_intent_id": 7}'),
    ],
)
async def test_the_shops_backend_refuses_a_malformed_body(shop: str, path: str, body: str) -> None:
    """As the API would: a 422 in its envelope, never a traceback's 500."""
    async with aiohttp.ClientSession() as session, session.post(shop + path, data=body) as answer:
        assert answer.status == 422
        assert (await answer.json())["error"] == "invalid_request"
