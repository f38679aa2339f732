"""/healthz says the process is alive without asking any server; /readyz says whether it can
work now: database, NATS and how far the relay and read models are behind. And a NATS outage
under a running relay reads as two warnings, with the relay's start and resume told once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import structlog
from aiohttp.test_utils import TestClient, TestServer

from infra.bus import connect
from infra.embedded import free_port
from infra.eventstore import ANY_VERSION, Metadata, PendingAppend, append
from infra.settings import Settings
from infra.supervise import OUTAGES, stop_task, stop_tasks
from projections.framework import ensure_live_schema
from services.health import Readiness, add_health_routes
from services.workers.relay import Relay
from tests.integration.sample_projection import TallyCounted, TallyProjection
from tests.integration.test_relay import _ids, _wait_published
from tests.servers import OwnNats, on_own_nats

META = Metadata(actor="test")


async def _client(readiness: Readiness) -> TestClient:
    from aiohttp import web

    app = web.Application()
    add_health_routes(app, readiness)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_alive_without_the_database_and_not_ready_with_the_envelope() -> None:
    dead = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none", min_size=0, max_size=1
    )
    client = await _client(Readiness(dead))
    try:
        alive = await client.get("/healthz")
        assert alive.status == 200
        assert (await alive.json())["status"] == "alive"
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert ready.headers["Retry-After"]
        body = await ready.json()
        assert body["error"] == "service_unavailable"
        assert "database" in body["detail"]
        assert body["checks"]["database"]["ok"] is False
    finally:
        await client.close()
        await dead.close()


async def test_ready_reports_each_check_and_turns_503_when_a_reader_falls_behind(
    pool: asyncpg.Pool,
) -> None:
    await ensure_live_schema(pool, TallyProjection)
    await append(
        pool,
        [PendingAppend(f"tally-{uuid.uuid4().hex[:8]}", ANY_VERSION, [TallyCounted(amount=1)])],
        META,
    )
    patient = Readiness(pool, relay=True, projections=[TallyProjection], max_lag_seconds=3600)
    client = await _client(patient)
    try:
        ready = await client.get("/readyz")
        assert ready.status == 200, await ready.text()
        checks = (await ready.json())["checks"]
        assert checks["database"] == {"ok": True}
        # No relay runs on this database: everything is still to publish and to project.
        assert checks["relay"]["behind"]["events"] >= 1
        assert checks["projection:tally"]["behind"]["events"] >= 1
    finally:
        await client.close()
    await asyncio.sleep(1.1)
    strict = Readiness(pool, relay=True, projections=[TallyProjection], max_lag_seconds=1)
    client = await _client(strict)
    try:
        ready = await client.get("/readyz")
        assert ready.status == 503
        body = await ready.json()
        assert body["error"] == "service_unavailable"
        assert "relay" in body["detail"] and "projection:tally" in body["detail"]
        assert body["checks"]["relay"]["behind"]["seconds"] >= 1
    finally:
        await client.close()


async def test_a_dead_component_makes_the_process_not_alive(pool: asyncpg.Pool) -> None:
    async def crash() -> None:
        raise RuntimeError("boom")

    readiness = Readiness(pool)
    readiness.components = {
        "relay": asyncio.create_task(asyncio.Event().wait()),
        "mailer": asyncio.create_task(crash()),
    }
    await asyncio.sleep(0)
    client = await _client(readiness)
    try:
        alive = await client.get("/healthz")
        assert alive.status == 503
        assert (await alive.json())["components"] == {"relay": "running", "mailer": "failed"}
        assert (await client.get("/readyz")).status == 503
    finally:
        await client.close()
        await stop_tasks(readiness.components.values())


async def _bus_when_up(settings: Settings):
    """The relay's own kind of connection, whose callbacks tell of NATS outages."""
    for _ in range(100):
        with contextlib.suppress(Exception):
            return await connect(settings, "relay")
        await asyncio.sleep(0.1)
    raise AssertionError("nats never came up")


async def test_a_nats_outage_under_the_relay_is_two_warnings_and_no_traceback(
    pool: asyncpg.Pool, settings: Settings, caplog
) -> None:
    run = uuid.uuid4().hex[:8]
    server = OwnNats(settings.data_dir / f"nats-health-{run}")
    local = on_own_nats(settings, server, run)
    stream = f"tally-{run}"
    await server.start()
    try:
        nc = await _bus_when_up(local)
        js = nc.jetstream()
        for dependency in ("postgresql", "nats"):  # an outage an earlier test left open
            OUTAGES.up(dependency)
        with structlog.testing.capture_logs() as logs:
            relay = Relay(pool, js, local, name=f"health-{run}")
            task = asyncio.create_task(relay.run())
            await append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=1)])], META)
            await _wait_published(js, local, await _ids(pool, stream))
            await server.stop()
            for i in range(3):
                await append(
                    pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=i)])], META
                )
            await asyncio.sleep(3.0)
            await server.start()
            await _wait_published(js, local, await _ids(pool, stream), timeout=30)
            await stop_task(task)
            await nc.close()
    finally:
        await server.stop()
    started = [line for line in logs if line["event"] == "relay_started"]
    assert len(started) == 1 and "position" in started[0] and "behind_events" in started[0]
    loud = [line for line in logs if line["log_level"] in ("warning", "error", "critical")]
    assert [(line["event"], line["dependency"]) for line in loud] == [
        ("outage_started", "nats"),
        ("outage_ended", "nats"),
    ], loud
    assert loud[1]["seconds"] >= 3
    assert not [line for line in logs if "exc_info" in line]
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
