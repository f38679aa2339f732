"""Debian's Chromium, driven by Playwright, against the gateway in-process (as tests/e2e runs
it) and two partner pages on other loopback ports: one whose origin the API key allows to frame
the embeds, one it does not. Without /usr/bin/chromium or Playwright the tests skip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from domain import catalog as c
from domain import venues
from infra.apikeys import create_key
from infra.embedded import free_port
from services.dev.sample_event import put_on_sale
from tests.e2e.conftest import (  # noqa: F401  (fixtures)
    TEST,
    _close_test_gateways,
    api,
    catalog,
    demo_token,
    new_organization,
    rebuild_read_models,
    serve,
    stripe_sim,
    venue_with,
    webhook_port,
)

CHROMIUM = Path("/usr/bin/chromium")

# The partner's page: it frames the URL given as ?src= and keeps every message it receives.
PARTNER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Partner page</title></head>
<body>
<h1>Partner page</h1>
<iframe id="embed" width="900" height="640" style="border:1px solid #ccc"></iframe>
<script>
window.messages = [];
window.addEventListener("message", (ev) => { window.messages.push(ev.data); });
document.getElementById("embed").src = new URLSearchParams(location.search).get("src");
</script>
</body></html>"""


@dataclass(frozen=True)
class Partners:
    """Origins of partner pages: `allowed` and `shop` are in the stage key's allowed_origins."""

    allowed: str
    foreign: str
    shop: str


@dataclass(frozen=True)
class Stage:
    """A fresh organization's seated event `show`, and its API key allowing the partner page."""

    key: str
    organization_id: int
    venue_id: int
    event_id: int
    type_id: int
    key_id: int


async def _partner_page(request: web.Request) -> web.Response:
    return web.Response(text=PARTNER_PAGE, content_type="text/html")


@pytest.fixture(scope="session")
async def partners() -> AsyncIterator[Partners]:
    """Two partner sites serving the same page, and the port the demo shop is to listen on."""
    runners, origins = [], []
    for _ in range(2):
        app = web.Application()
        app.router.add_get("/", _partner_page)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        origins.append(f"http://127.0.0.1:{port}")
    yield Partners(*origins, shop=f"http://127.0.0.1:{free_port()}")
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def stage(pool: asyncpg.Pool, partners: Partners) -> Stage:
    organization_id = await new_organization(pool)
    rows = [
        venues.Row(identifier=row, start=1, end=6, row_position_y=24.0 * index)
        for index, row in enumerate(("A", "B"))
    ]
    venue_id = await venue_with(
        pool, organization_id, venues.SectionPlan(name="Sal", width=160.0, height=60.0, rows=rows)
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=15000, max_per_purchase=20)
    event_id, type_id = await put_on_sale(pool, organization_id, venue_id, plan, TEST)
    issued = await create_key(
        pool,
        organization_id,
        "browser",
        allowed_origins=[partners.allowed, partners.shop],
        metadata=TEST,
    )
    await rebuild_read_models(pool)
    return Stage(issued.token, organization_id, venue_id, event_id, type_id, issued.key.id)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need {CHROMIUM} (apt-get install chromium)")
    async_api = pytest.importorskip(
        "playwright.async_api", reason="browser tests need Playwright (pip install -e '.[dev]')"
    )
    async with async_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A page of its own browser context; its screenshot is kept in tmp_path as an artifact."""
    context = await browser.new_context(viewport={"width": 1000, "height": 760})
    opened = await context.new_page()
    yield opened
    shot = tmp_path / f"{request.node.name}.png"
    await opened.screenshot(path=shot, full_page=True)
    print(f"screenshot: {shot}")
    await context.close()


async def next_message(
    page: Any,
    kind: str,
    where: Callable[[dict], bool] = lambda m: True,
    *,
    after: int = 0,
    timeout: float = 10.0,
) -> dict:
    """The first message of type `kind` that satisfies `where` among those the partner page
    received after its first `after` ones."""
    deadline = time.monotonic() + timeout
    received: list = []
    while time.monotonic() < deadline:
        received = await page.evaluate("window.messages || []")
        for message in received[after:]:
            if isinstance(message, dict) and message.get("type") == kind and where(message):
                return message
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} message within {timeout}s; received {received}")


async def received_count(page: Any) -> int:
    return await page.evaluate("(window.messages || []).length")
