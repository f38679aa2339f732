"""Rate limits and the auth-failure throttle held across gateways on one database, as
`linjerum run` and `linjerum gateway` hold them: a key gets its limit however its calls are
spread over the gateways, a bad token sprayed over them is refused after ten, and while
PostgreSQL cannot be reached each gateway holds the limits alone."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from infra import rate_limits
from infra.changes import ChangeFeed
from infra.db import create_pool
from infra.rate_limits import AUTH_BLOCKS
from services.api import rate_budgets, shared_limits
from services.api.context import CHANGES
from services.api.limits import AUTH_FAILURE_LIMIT, Verdict
from services.api.shared_limits import SharedLimits
from services.dev.demo_catalog import DEMO_ORGANIZATION
from tests.e2e.conftest import bearer, issue_key
from tests.faults.test_database_down import proxy  # noqa: F401  (fixture)

VALIDATE = "/api/v1/discount-codes/validate"
BACK_SECONDS = 15.0


async def _heard(gateway: TestClient, before: int | None) -> None:
    """Until the gateway's change feed listens and has moved past `before` on AUTH_BLOCKS."""
    feed = gateway.app[CHANGES]
    for _ in range(1000):
        now = feed.generation(AUTH_BLOCKS)
        if now is not None and now != before:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the gateway's change feed heard nothing")


async def test_a_keys_limit_holds_across_gateways(serve, pool, catalog) -> None:
    token = await issue_key(pool, catalog[DEMO_ORGANIZATION], rate_limit=5)
    gateways = [await serve(share_limits=True), await serve(share_limits=True)]
    for i in range(5):
        ok = await gateways[i % 2].get("/api/v1/venues", headers=bearer(token))
        assert ok.status == 200, i
        assert ok.headers["X-RateLimit-Limit"] == "5"
        assert ok.headers["X-RateLimit-Remaining"] == str(4 - i)
    late = await serve(share_limits=True)  # one that has not seen the key before
    for gateway in [*gateways, late]:
        limited = await gateway.get("/api/v1/venues", headers=bearer(token))
        assert limited.status == 429
        assert await limited.json() == {"error": "rate_limited"}
        assert 55 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["X-RateLimit-Limit"] == "5"
        assert limited.headers["X-RateLimit-Remaining"] == "0"


async def test_a_dedicated_bucket_holds_across_gateways(serve, pool, catalog) -> None:
    """Validations refused by the 20-a-minute bucket take nothing from the key's own limit."""
    token = await issue_key(pool, catalog[DEMO_ORGANIZATION], rate_limit=22)
    gateways = [await serve(share_limits=True), await serve(share_limits=True)]
    body = {"event_slug": "hamlet-2026", "code": "SPRING25"}
    for i in range(20):
        response = await gateways[i % 2].post(VALIDATE, json=body, headers=bearer(token))
        assert response.status == 200, i
        assert response.headers["X-RateLimit-Limit"] == "22"  # the key's own
        assert response.headers["X-RateLimit-Remaining"] == str(21 - i)
    for gateway in gateways:
        refused = await gateway.post(VALIDATE, json=body, headers=bearer(token))
        assert refused.status == 429
        assert await refused.json() == {"error": "rate_limited"}
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    for gateway in gateways:
        assert (await gateway.get("/api/v1/venues", headers=bearer(token))).status == 200
    assert (await gateways[0].get("/api/v1/venues", headers=bearer(token))).status == 429


async def test_failed_authentications_count_on_every_gateway(serve, demo_token) -> None:
    first, second, watching = [await serve(share_limits=True) for _ in range(3)]
    # `watching` has served this address and keeps it in memory as not refused: only the
    # database's notification of the block can change its mind.
    await _heard(watching, None)
    assert (await watching.get("/api/v1/events", headers=bearer(demo_token))).status == 200
    before = watching.app[CHANGES].generation(AUTH_BLOCKS)
    for i in range(AUTH_FAILURE_LIMIT):
        gateway = (first, second)[i % 2]
        bad = await gateway.get("/api/v1/events", headers=bearer(f"tk_live_wrong{i}"))
        assert bad.status == 401, i
    await _heard(watching, before)
    for gateway in (first, second, watching):
        for token in ("tk_live_wrong", demo_token):
            blocked = await gateway.get("/api/v1/events", headers=bearer(token))
            assert blocked.status == 429
            assert (await blocked.json())["error"] == "too_many_auth_failures"
            assert 0 < int(blocked.headers["Retry-After"]) <= 60


async def test_concurrent_calls_on_two_gateways_never_pass_the_limit(pool) -> None:
    idle = ChangeFeed(pool, (AUTH_BLOCKS,))  # not listening: nothing is kept from reads
    gateways = [SharedLimits(pool, idle), SharedLimits(pool, idle)]
    window = f"key:concurrent-{uuid.uuid4().hex}"
    calls = [gateway.take([(window, 50)]) for gateway in gateways for _ in range(60)]
    verdicts = await asyncio.gather(*calls)
    claimed = await pool.fetchval(
        "SELECT sum(u) FROM rate_windows, unnest(units) AS u WHERE window_key = $1", window
    )
    assert claimed == 50
    assert 0 < sum(v.allowed for v in verdicts) <= 50
    assert all(0 < v.retry_after <= 61 for v in verdicts if not v.allowed)


async def test_a_key_calling_in_bursts_gets_its_whole_limit(
    pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slice a burst did not spend before its hold ended is given back to the window: a key
    calling in bursts with pauses gets every call of its limit, and the room it is shown falls
    by one a call (it lost about ten calls at each pause)."""
    monkeypatch.setattr(rate_budgets, "HOLD_SECONDS", 0.2)
    monkeypatch.setattr(shared_limits, "HOLD_SECONDS", 0.2)
    limits = SharedLimits(pool, ChangeFeed(pool, (AUTH_BLOCKS,)))
    window = [(f"key:bursts-{uuid.uuid4().hex}", 120)]
    shown = []
    for _ in range(6):  # bounded: 6 bursts of 20 calls, 0.3 s apart
        for _ in range(20):
            verdict = await limits.take(window)
            assert verdict.allowed, len(shown)
            shown.append(verdict.remaining)
        await asyncio.sleep(0.3)
    assert shown == list(range(119, -1, -1))
    refused = await limits.take(window)
    assert not refused.allowed and 55 <= refused.retry_after <= 61


def _claims(how: str) -> float:
    return REGISTRY.get_sample_value("linjerum_rate_limit_claims_total", {"how": how}) or 0.0


async def test_a_busy_keys_calls_do_not_wait_for_each_slice(pool) -> None:
    """In an on-sale every call of the shop's key would otherwise wait, each time a slice runs
    out, for the claim of the next: the next is claimed while half of this one is left."""
    limits = SharedLimits(pool, ChangeFeed(pool, (AUTH_BLOCKS,)))
    window = [(f"key:busy-{uuid.uuid4().hex}", 100_000)]
    waited, ahead = _claims("waited"), _claims("ahead")
    for _ in range(120):  # bounded: about 2.4 s of a steady 1,000 calls a second
        verdicts = await asyncio.gather(*(limits.take(window) for _ in range(20)))
        assert all(v.allowed for v in verdicts)
        await asyncio.sleep(0.02)
    # Only the first calls wait, until the key's demand is known; the slices after are
    # claimed ahead (waiting for each slice of half a second would be five more).
    assert _claims("waited") - waited <= 2
    assert _claims("ahead") - ahead >= 4
    claimed = await pool.fetchval(
        "SELECT sum(u) FROM rate_windows, unnest(units) AS u WHERE window_key = $1", window[0][0]
    )
    assert 2_400 <= claimed < 2_400 + 2 * 600


async def test_calls_less_than_a_second_apart_leave_the_window_each_at_its_own_time(
    pool: asyncpg.Pool,
) -> None:
    """Claims close together were merged into one entry whose end kept sliding: every call was
    counted until a window after the latest, so a full window said wait a whole window, and the
    first call never left it on time (a 3 s window here stands for the minute)."""
    window = f"key:rolling-{uuid.uuid4().hex}"
    first = time.monotonic()
    for _ in range(10):  # bounded: 10 calls 0.1 s apart
        assert (await rate_limits.claim(pool, window, 10, 1, window=3.0, hold=0.0)).granted
        await asyncio.sleep(0.1)
    full = await rate_limits.claim(pool, window, 10, 1, window=3.0, hold=0.0)
    assert full.granted == 0
    assert full.wait <= 3.0 - (time.monotonic() - first) + 0.2
    await asyncio.sleep(max(0.0, first + 3.1 - time.monotonic()))
    assert (await rate_limits.claim(pool, window, 10, 1, window=3.0, hold=0.0)).granted == 1


async def test_a_key_calling_all_the_time_never_passes_its_limit_in_any_window(
    pool: asyncpg.Pool,
) -> None:
    """Calls merged into one entry of the log left the window together at the first one's end:
    a key calling ten times within a second was served sixteen within a minute (a 3 s window
    stands for the minute). A pair of grants counts as within the window only when the later
    one was sent less than a window after the earlier one's answer came back."""
    window = f"key:exact-{uuid.uuid4().hex}"
    granted: list[tuple[float, float]] = []
    stop = time.monotonic() + 3.6
    while time.monotonic() < stop:  # bounded: 3.6 s of calls about 5 ms apart
        sent = time.monotonic()
        claim = await rate_limits.claim(pool, window, 10, 1, window=3.0, hold=0.0)
        if claim.granted:
            granted.append((sent, time.monotonic()))
        await asyncio.sleep(0.005)
    assert len(granted) >= 11
    for earlier, later in zip(granted, granted[10:], strict=False):
        assert later[0] - earlier[1] >= 3.0 - 0.001, (earlier, later)


async def test_windows_that_have_ended_are_deleted(pool: asyncpg.Pool) -> None:
    ended, live = f"key:ended-{uuid.uuid4().hex}", f"key:live-{uuid.uuid4().hex}"
    await rate_limits.claim(pool, ended, 5, 1, window=0.01, hold=0.0)
    await rate_limits.claim(pool, live, 5, 1, window=60.0, hold=0.0)
    await asyncio.sleep(0.05)
    assert await rate_limits.purge(pool) >= 1
    kept = await pool.fetch(
        "SELECT window_key FROM rate_windows WHERE window_key = ANY($1)", [ended, live]
    )
    assert [row["window_key"] for row in kept] == [live]


async def test_each_gateway_holds_the_limits_alone_while_postgresql_is_down(proxy) -> None:  # noqa: F811
    cuttable, url = proxy
    through = await create_pool(url, 2)
    try:
        limits = SharedLimits(through, ChangeFeed(through, (AUTH_BLOCKS,)))
        window = [(f"key:outage-{uuid.uuid4().hex}", 3)]
        assert await limits.take(window) == Verdict(True, 3, 2, 0)
        await cuttable.cut()
        # Calls are still answered, counted by this gateway alone (the one before is not seen).
        verdicts = [await limits.take(window) for _ in range(4)]
        assert [v.allowed for v in verdicts] == [True, True, True, False]
        assert await limits.auth_refusal("198.51.100.9") == 0
        assert await limits.auth_failed("198.51.100.9") == 0
        await cuttable.restore()
        # This gateway's own window is full for a minute: a call let through again is the
        # shared window's, which still holds the call made before the outage.
        deadline = time.monotonic() + BACK_SECONDS
        verdict = await limits.take(window)
        while not verdict.allowed and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            verdict = await limits.take(window)
        assert verdict == Verdict(True, 3, 1, 0)
    finally:
        through.terminate()
