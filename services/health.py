"""`/healthz` and `/readyz`, the same on the gateway and on every worker process.

Alive (`/healthz`) means the event loop answers and no component's task has died: no server is
asked, so an outage of PostgreSQL does not get a healthy process restarted. Ready (`/readyz`)
means the process can do its work now: the database answers, NATS is connected, and the events
it follows are no further behind than the threshold (the relay behind the event store, each read
model behind the events of its categories)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypedDict

import asyncpg
import structlog
from aiohttp import web
from nats.aio.client import Client

from infra import metrics
from infra.event_history import backlog
from infra.eventstore import START, Position
from projections.framework import Projection, live_schema, read_checkpoint
from services.workers.outbox import OutboxTable

log = structlog.get_logger(__name__)

# Events behind are counted up to this many: enough to tell "a little" from "a lot" without
# scanning a long backlog on every probe.
COUNT_LIMIT = 10_000
CHECK_TIMEOUT = 2.0
# The checkpoint name of the relay whose lag is checked (Relay's default name).
RELAY = "main"
RETRY_AFTER_SECONDS = 5


class Behind(TypedDict):
    """How far a reader is behind: `events` (counted up to COUNT_LIMIT) and `seconds` (the age
    of the oldest event it has yet to handle; 0 when none)."""

    events: int
    seconds: float


async def behind(
    db: asyncpg.Pool | asyncpg.Connection,
    after: Position,
    categories: Iterable[str] | None = None,
) -> Behind:
    """The committed events after `after` (only those of `categories`, if given)."""
    found = (
        [await backlog(db, after, COUNT_LIMIT)]
        if categories is None
        else [await backlog(db, after, COUNT_LIMIT, c) for c in categories]
    )
    ages = [b.oldest_seconds for b in found if b.oldest_seconds is not None]
    return Behind(
        events=min(sum(b.events for b in found), COUNT_LIMIT),
        seconds=round(max(ages, default=0.0), 1),
    )


async def relay_position(db: asyncpg.Pool | asyncpg.Connection, name: str = RELAY) -> Position:
    row = await db.fetchrow(
        "SELECT tx_id::text::bigint AS tx_id, position FROM relay_checkpoint WHERE name = $1", name
    )
    return Position(row["tx_id"], row["position"]) if row else START


class Readiness:
    """What one process checks. `relay`: the relay's lag counts; `projections`: these read
    models' lag counts; `components`: the tasks of this process's components, by name (filled
    in when they start), whose state /healthz reports. `outboxes`: the outbox tables this
    process works off, whose depth /metrics reports."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        nats: Client | None = None,
        relay: bool = False,
        projections: Iterable[Projection] = (),
        max_lag_seconds: float = 30.0,
        outboxes: Iterable[OutboxTable] = (),
    ) -> None:
        self._pool = pool
        self._outboxes = tuple(outboxes)
        self._nats = nats
        self._relay = relay
        self._projections = tuple(projections)
        self._max_lag = max_lag_seconds
        self.components: dict[str, asyncio.Task[Any]] = {}

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        states = {name: _state(task) for name, task in self.components.items()}
        alive = all(state == "running" for state in states.values())
        return alive, {"status": "alive" if alive else "failed", "components": states}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Every check's outcome, by name; ready when each is ok."""
        checks: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(CHECK_TIMEOUT), self._pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
                checks["database"] = {"ok": True}
                checks.update(await self._lags(conn))
        except Exception as exc:
            checks["database"] = {"ok": False, "error": _error(exc)}
        if self._nats is not None:
            checks["nats"] = {"ok": self._nats.is_connected}
        _, alive = self.liveness()
        if self.components:
            checks["components"] = {"ok": all(s == "running" for s in alive["components"].values())}
        return all(check["ok"] for check in checks.values()), checks

    async def observe(self) -> None:
        """Sets the gauges that need a query (lags, outbox depths) for /metrics: measured when
        scraped, never per event."""
        async with asyncio.timeout(CHECK_TIMEOUT), self._pool.acquire() as conn:
            for name, lag in (await self._behind(conn)).items():
                if lag is None:
                    continue
                if name == "relay":
                    metrics.RELAY_LAG_EVENTS.labels(RELAY).set(lag["events"])
                    metrics.RELAY_LAG_SECONDS.labels(RELAY).set(lag["seconds"])
                else:
                    projection = name.removeprefix("projection:")
                    metrics.PROJECTION_LAG_EVENTS.labels(projection).set(lag["events"])
                    metrics.PROJECTION_LAG_SECONDS.labels(projection).set(lag["seconds"])
            for table in self._outboxes:
                depth = await conn.fetchval(table.pending, COUNT_LIMIT)
                metrics.OUTBOX_DEPTH.labels(table.name).set(depth)

    async def _lags(self, conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
        return {
            name: {"ok": False, "error": "not created yet"} if lag is None else self._judge(lag)
            for name, lag in (await self._behind(conn)).items()
        }

    async def _behind(self, conn: asyncpg.Connection) -> dict[str, Behind | None]:
        """How far each reader this process answers for is behind; None for a read model
        whose tables are not created yet."""
        lags: dict[str, Behind | None] = {}
        if self._relay:
            lags["relay"] = await behind(conn, await relay_position(conn))
        for projection in self._projections:
            name = f"projection:{projection.name}"
            try:
                position = await read_checkpoint(conn, live_schema(projection))
            except asyncpg.UndefinedTableError:
                lags[name] = None
                continue
            lags[name] = await behind(conn, position, projection.categories)
        return lags

    def _judge(self, lag: Behind) -> dict[str, Any]:
        return {"ok": lag["seconds"] <= self._max_lag, "behind": lag}


def _state(task: asyncio.Task[Any]) -> str:
    if not task.done():
        return "running"
    return "stopped" if task.cancelled() or task.exception() is None else "failed"


def _error(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"


READINESS: web.AppKey[Readiness] = web.AppKey("readiness", Readiness)


async def healthz(request: web.Request) -> web.Response:
    alive, body = request.app[READINESS].liveness()
    return web.json_response(body, status=200 if alive else 503)


async def readyz(request: web.Request) -> web.Response:
    ready, checks = await request.app[READINESS].readiness()
    if ready:
        return web.json_response({"status": "ready", "checks": checks})
    failing = ", ".join(name for name, check in checks.items() if not check["ok"])
    return web.json_response(
        {"error": "service_unavailable", "detail": f"not ready: {failing}", "checks": checks},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def metrics_text(request: web.Request) -> web.Response:
    """The Prometheus exposition. A database that does not answer leaves the lag gauges at
    their last values: the other metrics still tell what happened meanwhile."""
    try:
        await request.app[READINESS].observe()
    except Exception as exc:
        log.warning("metrics_not_measured", error=_error(exc))
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_health_routes(app: web.Application, readiness: Readiness) -> None:
    app[READINESS] = readiness
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def add_metrics_route(app: web.Application, readiness: Readiness) -> None:
    app[READINESS] = readiness
    app.router.add_get("/metrics", metrics_text)


async def serve_health(
    readiness: Readiness, host: str, port: int, *, health: bool = True, scrape: bool = False
) -> None:
    """A worker process's own small HTTP server: the two health endpoints, /metrics, or all
    three when the health and metrics ports are the same."""
    app = web.Application()
    if health:
        add_health_routes(app, readiness)
    if scrape:
        add_metrics_route(app, readiness)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
