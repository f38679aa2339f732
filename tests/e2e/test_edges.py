"""Bad input at the edges of the gateway: it is refused with the API's envelope, a fitting 4xx
and an X-Request-ID, never a 500, and it never fails another buyer's purchase; an unreachable
database is a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.db import create_pool
from infra.embedded import free_port
from services.api import http
from services.api.activity import ActivityLog
from services.api.context import ACTIVITY, SALE_FIRST
from services.api.gateway import (
    MAX_HEADER_BYTES,
    MAX_URL_BYTES,
    GatewayRunner,
    create_app,
)
from services.dev.demo_catalog import DEMO_ORGANIZATION
from services.usecases.purchases import Purchases
from services.usecases.ticket_documents import Documents
from tests.e2e.conftest import (
    ATTENDEE_LINK,
    BUYER,
    bearer,
    issue_key,
    order,
    seats_held,
    signed_webhook,
    small_event,
)

NUL = "\x00"
NUL_FIELDS = {
    "buyer.name": lambda body: body["buyer"].update(name=f"Ann{NUL}e"),
    "buyer.email": lambda body: body["buyer"].update(email=f"ann{NUL}@example.com"),
    "buyer.phone": lambda body: body["buyer"].update(phone=f"+45{NUL}1"),
    "comment": lambda body: body.update(comment=f"aisle{NUL}"),
    "discount_code": lambda body: body.update(discount_code=f"SPRING{NUL}"),
    "attendees[0].name": lambda body: body["attendees"][0].update(name=f"Bo{NUL}"),
    "attendees[0].email": lambda body: body["attendees"][0].update(email=f"bo{NUL}@example.com"),
    "event_slug": lambda body: body.update(event_slug=f"sh{NUL}ow"),
}


@pytest.fixture(scope="module")
async def stranger(serve) -> TestClient:
    """A gateway of its own for keyless calls: they count as failed authentications from
    127.0.0.1, and ten of them would throttle every later test sharing `api`."""
    return await serve()


def _error(payload: dict, response: aiohttp.ClientResponse, status: int, code: str) -> None:
    assert response.status == status, payload
    assert payload["error"] == code, payload
    assert response.headers["X-Request-ID"]


async def test_nul_in_any_purchase_field_is_a_422_naming_it_and_fails_no_one_else(
    api, pool
) -> None:
    token, _, type_id = await small_event(pool, 40)
    spoiled = []
    for field, spoil in NUL_FIELDS.items():
        body = order(type_id, attendees=[{"ticket_type_id": type_id, "index": 1, "name": "Bo"}])
        body["buyer"] = dict(BUYER)
        spoil(body)
        spoiled.append((field, body))

    async def buy(body: dict) -> tuple[aiohttp.ClientResponse, dict]:
        response = await api.post("/api/v1/purchases", json=body, headers=bearer(token))
        return response, await response.json()

    # The valid purchases and the spoiled ones at once, as they would share a desk batch.
    valid = [order(type_id) for _ in range(8)]
    answers = await asyncio.gather(*(buy(b) for b in valid + [b for _, b in spoiled]))
    for response, payload in answers[: len(valid)]:
        assert response.status == 201, payload
    for (field, _), (response, payload) in zip(spoiled, answers[len(valid) :], strict=True):
        _error(payload, response, 422, "invalid_request")
        assert payload["detail"].startswith(f"{field}: "), payload


@pytest.mark.parametrize("spoiler", ["\x1b[31m", "\r\n", "\u202e", "\u2066", "\x85"])
async def test_a_name_that_would_print_as_another_is_a_422(api, pool, spoiler: str) -> None:
    token, _, type_id = await small_event(pool, 3)
    for field in ("buyer.name", "attendees[0].name"):
        body = order(type_id, attendees=[{"ticket_type_id": type_id, "index": 1, "name": "Bo"}])
        body["buyer"] = dict(BUYER)
        target = body["buyer"] if field == "buyer.name" else body["attendees"][0]
        target["name"] = f"Ann{spoiler}Berg"
        response = await api.post("/api/v1/purchases", json=body, headers=bearer(token))
        payload = await response.json()
        _error(payload, response, 422, "invalid_request")
        assert payload["detail"].startswith(f"{field}: "), payload
    # Names in every script still buy.
    body = order(type_id, attendees=[{"ticket_type_id": type_id, "index": 1, "name": "שרה לוי"}])
    body["buyer"] = {**BUYER, "name": "Søren Ærø 李"}
    response = await api.post("/api/v1/purchases", json=body, headers=bearer(token))
    assert response.status == 201, await response.text()


async def _gateway(pool: asyncpg.Pool) -> TestClient:
    """A gateway of its own without Stripe (purchases of a free or a failing kind are not what
    these tests look at)."""
    sales = Purchases(pool, None)
    documents = Documents(pool, sales.catalog, "tickets@example.com", ATTENDEE_LINK)
    client = TestClient(TestServer(create_app(pool, ActivityLog(pool), sales, documents)))
    await client.start_server()
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/events/ham%00let",
        "/api/v1/events/ham%00let/availability",
        "/api/v1/tickets/AB%00CD/verify",
        "/api/v1/purchases/tok%00en",
        "/api/v1/attractions/muse%00um/availability?date=2030-01-01",
        "/api/v1/events?limit=5%00",
        "/api/v1/tickets/ABCD?email=a%00b@example.com",
    ],
)
async def test_nul_in_a_path_or_query_is_a_422_and_never_stalls_the_activity_log(
    api, stranger, demo_token, catalog, path: str
) -> None:
    response = await api.get(path, headers=bearer(demo_token))
    _error(await response.json(), response, 422, "invalid_request")

    anonymous = await stranger.get(path)
    _error(await anonymous.json(), anonymous, 401, "unauthorized")
    activity = api.server.app[ACTIVITY]
    await activity.flush()
    assert activity.pending == 0


async def test_a_lone_surrogate_in_a_body_is_a_422_naming_its_field(api, demo_token) -> None:
    seat = '{"token": "tttttttttttttttttttt", "name": "Bo\\ud800", "email": null}'
    raw = f'{{"email": "a@example.com", "seats": [{seat}]}}'
    response = await api.patch(
        "/api/v1/tickets/ABCD",
        data=raw.encode(),
        headers={**bearer(demo_token), "Content-Type": "application/json"},
    )
    payload = await response.json()
    _error(payload, response, 422, "invalid_request")
    assert payload["detail"].startswith("seats[0].name: "), payload


async def test_nul_in_an_attendee_edit_is_a_422(api, demo_token) -> None:
    seat = {"token": "t" * 20, "name": f"Bo{NUL}", "email": None}
    body = {"email": BUYER["email"], "seats": [seat]}
    response = await api.patch("/api/v1/tickets/ABCD", json=body, headers=bearer(demo_token))
    payload = await response.json()
    _error(payload, response, 422, "invalid_request")
    assert payload["detail"].startswith("seats[0].name: "), payload


# (aiohttp's client refuses to send other control characters; the server's parser refuses them)
@pytest.mark.parametrize("key", ["ключ-1", "clé", "key\tx"])
async def test_an_idempotency_key_that_is_not_printable_ascii_is_a_422(api, pool, key: str) -> None:
    token, _, type_id = await small_event(pool, 5)
    headers = {**bearer(token), "Idempotency-Key": key}
    response = await api.post("/api/v1/purchases", json=order(type_id), headers=headers)
    payload = await response.json()
    _error(payload, response, 422, "invalid_request")
    assert payload["detail"].startswith("Idempotency-Key: ")


async def test_an_idempotency_key_that_is_not_utf8_is_a_422(api, pool) -> None:
    token, _, type_id = await small_event(pool, 5)
    body = json.dumps(order(type_id)).encode()
    reader, writer = await asyncio.open_connection(api.host, api.port)
    writer.write(
        b"POST /api/v1/purchases HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Idempotency-Key: k\xff\xfe\r\n\r\n"
        + body
    )
    answer = await reader.read()
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 422 "), answer
    assert b"x-request-id:" in head.lower()
    assert json.loads(payload)["detail"].startswith("Idempotency-Key: ")


async def test_a_body_that_does_not_arrive_is_a_408_and_holds_no_turn_meanwhile(
    api, pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purchase whose body never finished counted as selling for as long as its socket was
    open, and four such seat suggestions held every browsing turn: other buyers' suggestions
    waited seconds in an on-sale."""
    monkeypatch.setattr(http, "BODY_SECONDS", 0.5)
    token, _, _ = await small_event(pool, 5)
    reader, writer = await asyncio.open_connection(api.host, api.port)
    writer.write(
        b"POST /api/v1/purchases HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
        + b"Content-Length: 100\r\n\r\n{}"
    )
    await asyncio.sleep(0.2)
    assert api.app[SALE_FIRST]._selling == 0
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"x-request-id:" in head.lower()
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    payload = await reader.readexactly(length)
    writer.close()
    assert json.loads(payload)["error"] == "request_timeout"


@pytest.mark.parametrize("path", ["/api/v1/pricing/preview", "/api/v1/purchases"])
async def test_a_body_nested_past_decoding_is_a_422(api, pool, path: str) -> None:
    """A thousand nested arrays where any value goes (a preview's `comment`), or a purchase
    under an Idempotency-Key, whose body is compared by its content."""
    token, event_id, type_id = await small_event(pool, 5)
    body = json.dumps(order(type_id) | {"comment": "X"})
    raw = body.replace('"X"', "[" * 5000 + "]" * 5000)
    headers = {**bearer(token), "Content-Type": "application/json", "Idempotency-Key": "deep"}
    response = await api.post(path, data=raw.encode(), headers=headers)
    payload = await response.json()
    _error(payload, response, 422, "invalid_request")
    assert payload["detail"].startswith(("body: nested too deeply", "comment: ")), payload
    assert await seats_held(pool, event_id) == 0


async def test_a_body_declared_as_another_type_is_a_415_and_nothing_is_held(api, pool) -> None:
    """Issue 9: a `text/plain` purchase was taken. A JSON endpoint takes application/json (with
    a charset or as a `+json` type) or a body with no declared type; other types are a 415."""
    token, event_id, type_id = await small_event(pool, 5)
    raw = json.dumps(order(type_id))
    for media in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = await api.post(
            "/api/v1/purchases", data=raw, headers={**bearer(token), "Content-Type": media}
        )
        _error(await response.json(), response, 415, "unsupported_media_type")
    assert await seats_held(pool, event_id) == 0
    for media in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = await api.post(
            "/api/v1/purchases", data=raw, headers={**bearer(token), "Content-Type": media}
        )
        assert response.status == 201, await response.text()
    undeclared = await api.post(
        "/api/v1/purchases",
        data=raw.encode(),
        headers=bearer(token),
        skip_auto_headers=["Content-Type"],
    )
    assert undeclared.status == 201, await undeclared.text()
    assert await seats_held(pool, event_id) == 3
    not_json = await api.post(
        "/api/v1/purchases",
        data="event_slug=show&quantities=1",
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    _error(await not_json.json(), not_json, 422, "invalid_request")


async def test_a_body_over_the_limit_is_a_413(api, demo_token) -> None:
    body = {"event_slug": "x" * (1 << 20), "quantities": {}, "buyer": BUYER}
    response = await api.post("/api/v1/purchases", json=body, headers=bearer(demo_token))
    _error(await response.json(), response, 413, "payload_too_large")


async def test_a_signed_webhook_that_is_not_a_stripe_event_is_a_400(api) -> None:
    for payload in ('{"hello": "world"}', "[1, 2]", '{"id": "evt_1", "type": "x\\u0000"}'):
        response = await signed_webhook(api, payload)
        _error(await response.json(), response, 400, "invalid_payload")


async def test_a_signed_event_of_a_type_not_acted_on_is_ignored_whatever_its_object(api) -> None:
    """Stripe sends what the endpoint subscribes to: a balance has no id, a payout's amount may
    be null. Refusing those would have Stripe retry them for days and disable the endpoint."""
    others = [
        ("balance.available", {"object": "balance", "available": []}),
        ("payout.paid", {"id": "po_1", "amount": None}),
        ("billing.credit_grant.created", {"id": "cg_1", "amount": {"type": "monetary"}}),
        ("checkout.session.completed", {"id": "cs_1", "metadata": None}),
        ("refund.updated", {"id": "re_1", "metadata": None, "amount": 100}),
    ]
    for kind, obj in others:
        payload = {"id": "evt_x", "type": kind, "data": {"object": obj}}
        response = await signed_webhook(api, json.dumps(payload))
        assert response.status == 200, await response.text()
        assert (await response.json())["outcome"] == "ignored"
    unlabelled = {"id": "ch_1", "object": "charge", "metadata": None, "payment_intent": None}
    refund = {"id": "evt_z", "type": "charge.refunded", "data": {"object": unlabelled}}
    response = await signed_webhook(api, json.dumps(refund))
    assert response.status == 200, await response.text()
    nameless = {"id": "evt_y", "type": "payment_intent.succeeded", "data": {"object": {}}}
    response = await signed_webhook(api, json.dumps(nameless))
    _error(await response.json(), response, 400, "invalid_payload")
    deep = '{"id": "evt_d", "type": "charge.refunded", "data": ' + "[" * 5000 + "]" * 5000 + "}"
    response = await signed_webhook(api, deep)
    _error(await response.json(), response, 400, "invalid_payload")


@contextlib.asynccontextmanager
async def _served(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """The gateway as `linjerum run` serves it: GatewayRunner on a TCP port; yields its URL."""
    sales = Purchases(pool, None)
    documents = Documents(pool, sales.catalog, "tickets@example.com", ATTENDEE_LINK)
    runner = GatewayRunner(create_app(pool, ActivityLog(pool), sales, documents), access_log=None)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await sales.close()


async def test_a_url_or_header_over_the_limit_gets_the_envelope(pool, catalog) -> None:
    async with _served(pool) as base, aiohttp.ClientSession() as http:
        cases = [
            (f"/api/v1/events/{'x' * MAX_URL_BYTES}", {}, 414, "uri_too_long"),
            (
                "/api/v1/events",
                {"X-Filler": "x" * (MAX_HEADER_BYTES + 10)},
                431,
                "headers_too_large",
            ),
            ("/api/v1/events", {f"X-H{n}": "x" for n in range(200)}, 431, "headers_too_large"),
            # Each line short enough, their sum over 8 KiB.
            ("/api/v1/events", {f"X-P{n}": "x" * 1000 for n in range(9)}, 431, "headers_too_large"),
        ]
        for path, headers, status, code in cases:
            async with http.get(base + path, headers=headers) as response:
                payload = await response.json()
                _error(payload, response, status, code)
                assert response.content_type == "application/json"
                assert {"X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(
                    response.headers
                )
        async with http.get(base + "/api/v1/events", headers={"X-Request-ID": "ok-1"}) as ok:
            assert ok.status == 401 and ok.headers["X-Request-ID"] == "ok-1"


async def test_a_body_its_content_encoding_cannot_decode_is_a_400(
    api, demo_token, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
        for path in ("/api/v1/pricing/preview", "/api/v1/purchases", "/api/v1/webhooks/stripe"):
            response = await api.post(
                path,
                data=b"{}",
                headers={
                    **bearer(demo_token),
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                },
            )
            _error(await response.json(), response, 400, "bad_request")
        await asyncio.sleep(0.1)
    # Answered, so not logged as an unhandled error with a traceback either.
    assert [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"] == []


async def test_a_caller_who_hangs_up_mid_body_is_no_outage(pool, catalog) -> None:
    token = await issue_key(pool, catalog[DEMO_ORGANIZATION])
    request_id = f"hung-up-{uuid.uuid4()}"
    activity = ActivityLog(pool)
    sales = Purchases(pool, None)
    documents = Documents(pool, sales.catalog, "tickets@example.com", ATTENDEE_LINK)
    runner = GatewayRunner(create_app(pool, activity, sales, documents), access_log=None)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                "POST /api/v1/pricing/preview HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nX-Request-ID: {request_id}\r\n"
                'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"event'
            ).encode()
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        for _ in range(100):
            await asyncio.sleep(0.05)
            await activity.flush()
            rows = await pool.fetch(
                "SELECT status FROM api_activity WHERE request_id = $1", request_id
            )
            if rows:
                break
        assert [r["status"] for r in rows] == [499]
    finally:
        await runner.cleanup()
        await sales.close()


class _Proxy:
    """A TCP relay to PostgreSQL that the test can cut: the database "goes away" for the
    gateway behind it, and only for that gateway."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_a_database_out_of_reach_is_a_503_with_retry_after(settings, catalog) -> None:
    url = aiohttp.client.URL(settings.database_url)
    proxy = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    pool = await create_pool(str(url.with_port(proxy.port)), size=4)
    token = await issue_key(pool, catalog[DEMO_ORGANIZATION])
    api = await _gateway(pool)
    missing = f"/api/v1/purchases/{uuid.uuid4().hex}"
    try:
        before = await api.get(missing, headers=bearer(token))
        assert before.status == 404

        await proxy.stop()
        for headers in (bearer(token), bearer("tk_live_never_seen_" + "x" * 20)):
            response = await api.get(missing, headers=headers)
            payload = await response.json()
            _error(payload, response, 503, "service_unavailable")
            assert response.headers["Retry-After"] == "5"

        await proxy.start()
        after = await api.get(missing, headers=bearer(token))
        assert after.status == 404
    finally:
        await api.close()
        pool.terminate()
        with contextlib.suppress(Exception):
            await proxy.stop()
