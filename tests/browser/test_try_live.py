"""The "Try it live" page's server: the page with its policy, and both embeds of the demo
theatre minted with the demo organization's key, with URLs the page's own origin can frame."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.dev.try_live import PATH, TrySettings, try_live


@pytest.fixture
async def try_page(api, demo_token: str) -> AsyncIterator[TestClient]:
    site = web.Application()
    gateway = str(api.make_url("")).rstrip("/")
    site.add_subapp(PATH, try_live(TrySettings(api_base=gateway, api_key=demo_token)))
    async with TestClient(TestServer(site)) as client:
        yield client


async def test_the_page_may_frame_its_own_origin_and_nothing_else(try_page: TestClient) -> None:
    response = await try_page.get(PATH)
    assert response.status == 200
    assert 'id="linjerum-try"' in await response.text()
    policy = response.headers["Content-Security-Policy"]
    assert "frame-src 'self'" in policy
    assert "default-src 'none'" in policy and "script-src 'self'" in policy


async def test_both_embeds_are_minted_for_the_demo_theatre(try_page: TestClient) -> None:
    response = await try_page.get(f"{PATH}/embeds")
    assert response.status == 200
    embeds = await response.json()
    assert embeds["planner"]["event"]["slug"] == "hamlet-2026"
    assert embeds["planner"]["url"].startswith("/embed/seat-planner?token=")
    assert embeds["editor"]["venue"]["name"] == "Det Ny Teater"
    assert embeds["editor"]["url"].startswith("/embed/seat-plan-editor?token=")
    assert embeds["editor"]["expires_in"] == 900
