"""What every partner API call shares: bearer keys (revocation holds at once), the per-IP
auth-failure throttle, per-key rolling rate limits with their headers, request ids, the JSON
envelope for unknown routes and methods, and the activity log."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg

from infra.apikeys import revoke_key
from infra.changes import API_KEYS
from services.api.activity import recent_activity
from services.api.context import ACTIVITY, CHANGES
from services.api.forwarded import trusted_networks
from services.dev.demo_catalog import DEMO_ORGANIZATION
from tests.e2e.conftest import TEST, bearer, issue_key


async def test_missing_malformed_and_unknown_keys_are_401(api) -> None:
    for headers in [
        {},
        {"Authorization": "tk_live_abc"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer tk_live_" + "x" * 43},
        {"Authorization": "Bearer not-a-linjerum-token"},
    ]:
        response = await api.get("/api/v1/organization", headers=headers)
        assert response.status == 401
        assert await response.json() == {
            "error": "unauthorized",
            "detail": "missing, invalid or revoked API key",
        }
        assert response.headers["X-RateLimit-Limit"]


async def test_revoked_key_fails_on_every_gateway_at_once(serve, pool, catalog) -> None:
    token = await issue_key(pool, catalog[DEMO_ORGANIZATION])
    key_id = await pool.fetchval("SELECT max(id) FROM api_keys")
    gateways = [await serve(), await serve()]
    for gateway in gateways:
        # Each gateway keeps the key in memory once its change feed listens: the revocation
        # must reach that memory, not just the table.
        feed = gateway.app[CHANGES]
        for _ in range(500):
            if feed.generation(API_KEYS) is not None:
                break
            await asyncio.sleep(0.01)
        assert feed.generation(API_KEYS) is not None
        for _ in range(2):
            assert (await gateway.get("/api/v1/organization", headers=bearer(token))).status == 200
    heard = [gateway.app[CHANGES].generation(API_KEYS) for gateway in gateways]
    await revoke_key(pool, key_id, TEST)
    # The notification reaches each gateway milliseconds after the commit; from then on the
    # key is refused everywhere, although each of them was keeping it in memory.
    for gateway, before in zip(gateways, heard, strict=True):
        for _ in range(500):
            if gateway.app[CHANGES].generation(API_KEYS) != before:
                break
            await asyncio.sleep(0.01)
        assert (await gateway.get("/api/v1/organization", headers=bearer(token))).status == 401


async def test_eleventh_failure_in_a_minute_is_throttled_per_ip(serve, demo_token) -> None:
    gateway = await serve()
    for _ in range(10):
        bad = await gateway.get("/api/v1/events", headers=bearer("tk_live_wrong"))
        assert bad.status == 401
    for token in ("tk_live_wrong", demo_token):
        blocked = await gateway.get("/api/v1/events", headers=bearer(token))
        assert blocked.status == 429
        assert (await blocked.json())["error"] == "too_many_auth_failures"
        assert 0 < int(blocked.headers["Retry-After"]) <= 60


async def _raw_get(gateway, path: str, authorization: bytes) -> tuple[bytes, bytes]:
    """(head, body) of a GET sent as raw bytes: aiohttp's client sends no header that is not
    UTF-8, but any other client may."""
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + authorization
        + b"\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


async def test_a_key_that_is_not_utf8_is_a_401_and_an_attempt(serve, demo_token) -> None:
    """Bytes that are not UTF-8 in the key answered 500 on every route and escaped the spray
    throttle; they are a failed credential like any unknown key."""
    gateway = await serve()
    for _ in range(10):
        head, body = await _raw_get(gateway, "/api/v1/organization", b"Bearer tk_live_\xff\xfe")
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert json.loads(body)["error"] == "unauthorized"
    blocked = await gateway.get("/api/v1/events", headers=bearer(demo_token))
    assert blocked.status == 429


async def test_calls_without_a_key_are_401_but_no_attempt(serve, demo_token) -> None:
    """Only a credential that fails counts toward the spray throttle: a client checking that
    every endpoint wants a key must not lock its address out."""
    gateway = await serve()
    for _ in range(15):
        missing = await gateway.get("/api/v1/events")
        assert missing.status == 401
        assert (await missing.json())["error"] == "unauthorized"
    assert (await gateway.get("/api/v1/events", headers=bearer(demo_token))).status == 200
    for _ in range(10):
        assert (await gateway.get("/api/v1/events", headers=bearer("tk_live_x"))).status == 401
    assert (await gateway.get("/api/v1/events")).status == 429  # now the address is blocked


async def test_successes_do_not_count_as_auth_failures(serve, demo_token) -> None:
    gateway = await serve()
    for _ in range(9):
        assert (await gateway.get("/api/v1/events", headers=bearer("tk_live_x"))).status == 401
    for _ in range(20):
        assert (await gateway.get("/api/v1/events", headers=bearer(demo_token))).status == 200


async def test_rate_limit_headers_and_retry_after(serve, pool, catalog) -> None:
    gateway = await serve()
    token = await issue_key(pool, catalog[DEMO_ORGANIZATION], rate_limit=3)
    remaining = []
    for _ in range(3):
        ok = await gateway.get("/api/v1/venues", headers=bearer(token))
        assert ok.status == 200
        assert ok.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(ok.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    refused_id = f"refused-{uuid.uuid4()}"
    limited = await gateway.get(
        "/api/v1/venues", headers={**bearer(token), "X-Request-ID": refused_id}
    )
    assert limited.status == 429
    assert await limited.json() == {"error": "rate_limited"}
    assert 55 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    # Every call is in the key's activity log, the refused one too.
    await gateway.app[ACTIVITY].flush()
    rows = await recent_activity(pool, catalog[DEMO_ORGANIZATION], limit=50)
    [refused] = [r for r in rows if r.request_id == refused_id]
    assert refused.status == 429 and refused.api_key_id is not None


async def test_request_id_is_echoed_capped_or_generated(api, demo_token) -> None:
    mine = await api.get(
        "/api/v1/organization", headers={**bearer(demo_token), "X-Request-ID": "shop-42"}
    )
    assert mine.headers["X-Request-ID"] == "shop-42"
    long = await api.get(
        "/api/v1/organization", headers={**bearer(demo_token), "X-Request-ID": "r" * 500}
    )
    assert long.headers["X-Request-ID"] == "r" * 128
    fresh = await api.get("/api/v1/organization", headers=bearer(demo_token))
    assert uuid.UUID(fresh.headers["X-Request-ID"]).version == 4


async def test_unknown_route_and_wrong_method_are_json(api, demo_token) -> None:
    missing = await api.get("/api/v1/nothing-here", headers=bearer(demo_token))
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    assert missing.headers["X-Request-ID"]
    wrong = await api.delete("/api/v1/events", headers=bearer(demo_token))
    assert wrong.status == 405 and (await wrong.json())["error"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


async def test_a_wrong_path_or_method_is_the_keys_call_like_any_other(serve, pool, catalog) -> None:
    gateway = await serve()
    token = await issue_key(pool, catalog[DEMO_ORGANIZATION], rate_limit=5)
    request_id = f"wrong-{uuid.uuid4()}"
    answers = [
        await gateway.get(
            "/api/v1/organization/", headers={**bearer(token), "X-Request-ID": request_id}
        ),
        await gateway.delete("/api/v1/organization", headers=bearer(token)),
    ]
    assert [a.status for a in answers] == [404, 405]
    assert [a.headers["X-RateLimit-Limit"] for a in answers] == ["5", "5"]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["4", "3"]
    await gateway.app[ACTIVITY].flush()
    rows = await recent_activity(pool, catalog[DEMO_ORGANIZATION], limit=50)
    [mine] = [r for r in rows if r.request_id == request_id]
    assert mine.status == 404 and mine.api_key_id is not None
    bad = await gateway.get("/api/v1/nothing-here", headers=bearer("tk_live_" + "x" * 43))
    assert bad.status == 401


async def test_head_answers_gets_headers_without_a_body(api, demo_token) -> None:
    for path in ("/api/v1/organization", "/api/v1/events", "/api/v1/openapi.json"):
        got = await api.get(path, headers=bearer(demo_token))
        head = await api.head(path, headers=bearer(demo_token))
        assert head.status == got.status == 200, path
        assert await head.read() == b""
        assert head.headers["Content-Type"] == got.headers["Content-Type"]
        assert head.headers["X-RateLimit-Limit"]


async def test_an_id_in_a_path_has_one_spelling(api, demo_token) -> None:
    venue = await (await api.get("/api/v1/venues", headers=bearer(demo_token))).json()
    first = venue["venues"][0]["id"]
    assert (await api.get(f"/api/v1/venues/{first}", headers=bearer(demo_token))).status == 200
    for spelling in (f"0{first}", "".join(chr(0xFF10 + int(d)) for d in str(first)), f"{first}%0A"):
        response = await api.get(f"/api/v1/venues/{spelling}", headers=bearer(demo_token))
        payload = await response.json()
        assert response.status == 422 and payload["detail"].startswith("id"), (spelling, payload)


async def test_calls_land_in_the_activity_log(api, demo_token, pool: asyncpg.Pool, catalog) -> None:
    request_id = f"activity-{uuid.uuid4()}"
    await api.get("/api/v1/events", headers={**bearer(demo_token), "X-Request-ID": request_id})
    await api.get("/api/v1/events/nope", headers=bearer(demo_token))
    await api.app[ACTIVITY].flush()
    rows = await recent_activity(pool, catalog[DEMO_ORGANIZATION], limit=50)
    mine = [r for r in rows if r.request_id == request_id]
    assert len(mine) == 1
    assert (mine[0].method, mine[0].path, mine[0].status) == ("GET", "/api/v1/events", 200)
    assert mine[0].api_key_id is not None and mine[0].duration_ms > 0
    assert any(r.path == "/api/v1/events/nope" and r.status == 404 for r in rows)


async def test_behind_a_trusted_proxy_one_clients_bad_tokens_block_only_that_client(
    serve, demo_token
) -> None:
    """Behind compose's nginx every call comes from one address: the throttle must key on the
    client the proxy names, or one client's bad tokens would lock every buyer out."""
    gateway = await serve(trusted_proxies=trusted_networks("127.0.0.1"))
    sprayer = {"X-Forwarded-For": "198.51.100.66"}
    for _ in range(10):
        bad = await gateway.get("/api/v1/events", headers={**bearer("tk_live_no"), **sprayer})
        assert bad.status == 401
    blocked = await gateway.get("/api/v1/events", headers={**bearer(demo_token), **sprayer})
    assert blocked.status == 429
    other = {**bearer(demo_token), "X-Forwarded-For": "198.51.100.67"}
    assert (await gateway.get("/api/v1/events", headers=other)).status == 200


async def test_a_whole_number_in_a_query_has_one_spelling(api, demo_token) -> None:
    for path, field in (
        ("/api/v1/events?limit=5.0", "limit"),
        ("/api/v1/events?limit=1e1", "limit"),
        ("/api/v1/attractions?limit=2.0", "limit"),
        ("/api/v1/venues/1/seat-plan?event_id=8e0", "event_id"),
    ):
        response = await api.get(path, headers=bearer(demo_token))
        payload = await response.json()
        assert response.status == 422 and payload["detail"].startswith(f"{field}: "), payload
    assert (await api.get("/api/v1/events?limit=5", headers=bearer(demo_token))).status == 200
