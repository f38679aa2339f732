"""A command that keeps losing to concurrent writers of its stream is refused with 503 and a
short Retry-After: nothing of it was stored, so the caller may simply try again (with the same
idempotency key). It is no server fault, and never a 500."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from infra.eventstore import ConcurrencyError
from services.api.gateway import request_context


async def _kept_conflicting(request: web.Request) -> web.Response:
    raise ConcurrencyError("purchase-abc", "gave up after 8 attempts")


async def test_a_command_that_kept_conflicting_is_answered_503_with_retry_after() -> None:
    app = web.Application(middlewares=[request_context])
    app.router.add_post("/contended", _kept_conflicting)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/contended")
        body = await response.json()
    assert response.status == 503
    assert body["error"] == "service_unavailable"
    assert "try again" in body["detail"]
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Request-ID"]
