"""`linjerum run`, started as a user starts it, sells an event while PostgreSQL is cut off from it
(twice, the second time for 20 s), its NATS server is stopped and started again, and each of
its component processes is killed (the gateway twice). Buyers keep buying as partners' shops
do: one or two seats chosen by the desk, an Idempotency-Key per purchase kept across retries,
pay at the simulator, poll until paid. Afterwards, with the run left to recover: no seat held or
ticketed twice, no purchase paid twice or opened twice under one key, every purchase answered
201 stored and every one seen paid paid in the store with all its tickets and its confirmation
e-mail queued, and the relay and every read model caught up with the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import psutil
import pytest

from infra.db import create_pool, migrate
from infra.embedded import free_port
from projections.framework import live_schema, read_checkpoint
from projections.registry import all_projections
from tests.e2e.conftest import order, small_event
from tests.servers import CuttableProxy, OwnNats, through

SEATS = 800
BUYERS = 16
SALE_SECONDS = 45.0
LONG_OUTAGE_SECONDS = 20.0
RECOVER_SECONDS = 90.0


@dataclass
class Database:
    url: str
    pool: asyncpg.Pool


@pytest.fixture
async def database(servers: tuple[str, str]) -> AsyncIterator[Database]:
    admin_url, _ = servers
    name = f"linjerum_faults_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rpartition('/')[0]}/{name}"
    pool = await create_pool(url, 4)
    await migrate(pool)
    yield Database(url, pool)
    await pool.close()
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@dataclass
class Seen:
    """What the buyers were told."""

    created: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> purchase token
    paid: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    created_after_faults: int = 0
    gave_up: int = 0


class Buyers:
    def __init__(self, port: int, sim_port: int, token: str, type_id: int) -> None:
        self.api = f"http://127.0.0.1:{port}/api/v1"
        self.sim = f"http://127.0.0.1:{sim_port}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.type_id = type_id
        self.seen = Seen()
        self.faults_over = asyncio.Event()
        self.sold_out = False

    async def _call(self, session, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        try:
            async with session.request(method, url, **kw) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.seen.answers[type(exc).__name__] += 1
            return 0, None
        error = body.get("error") if isinstance(body, dict) else None
        self.seen.answers[f"{response.status} {error or ''}".strip()] += 1
        return response.status, body

    async def _buy(self, api, sim, until: float) -> None:
        key = uuid.uuid4().hex
        body = order(self.type_id, random.choice((1, 2)))
        while True:
            status, created = await self._call(
                api, "POST", f"{self.api}/purchases", json=body, headers={"Idempotency-Key": key}
            )
            if status == 201:
                break
            if status == 409 and created["error"] in ("insufficient_availability", "seats_taken"):
                self.sold_out = True
                return
            assert status in (0, 409, 503), created  # gone, in flight, or unreachable
            if time.monotonic() > until + RECOVER_SECONDS / 2:
                self.seen.gave_up += 1
                return
            await asyncio.sleep(0.3)
        token = created["purchase"]["token"]
        assert self.seen.created.setdefault(key, token) == token
        self.seen.created_after_faults += self.faults_over.is_set()
        intent = created["payment"]["stripe_payment_intent_id"]
        paying = f"{self.sim}/_sim/payment_intents/{intent}/succeed"
        while (await self._call(sim, "POST", paying))[0] != 200:
            if time.monotonic() > until:
                return
            await asyncio.sleep(0.3)
        while time.monotonic() < until + RECOVER_SECONDS / 2:
            status, polled = await self._call(api, "GET", f"{self.api}/purchases/{token}")
            if status == 200 and polled["purchase"]["paid_at"]:
                self.seen.paid.add(token)
                return
            await asyncio.sleep(0.3)

    @contextlib.asynccontextmanager
    async def _sessions(self) -> AsyncIterator[tuple[aiohttp.ClientSession, ...]]:
        timeout = aiohttp.ClientTimeout(total=15)
        async with (
            aiohttp.ClientSession(headers=self.headers, timeout=timeout) as api,
            aiohttp.ClientSession(timeout=timeout) as sim,
        ):
            yield api, sim

    async def run(self) -> None:
        until = time.monotonic() + SALE_SECONDS
        async with self._sessions() as (api, sim):

            async def buyer() -> None:
                while not self.sold_out and time.monotonic() < until:
                    await self._buy(api, sim, until)
                    await asyncio.sleep(random.uniform(0.2, 1.2))

            await asyncio.gather(*(buyer() for _ in range(BUYERS)))

    async def burst(self, buyers: int) -> None:
        """Purchases sent at once, which a kill right after finds under way."""
        async with self._sessions() as (api, sim):
            until = time.monotonic() + SALE_SECONDS
            await asyncio.gather(*(self._buy(api, sim, until) for _ in range(buyers)))


def _kill(run: asyncio.subprocess.Process, group: str) -> None:
    for child in psutil.Process(run.pid).children():
        argv = child.cmdline()
        if "--child" in argv and argv[argv.index("--child") + 1] == group:
            os.kill(child.pid, signal.SIGKILL)
            return
    raise AssertionError(f"no {group} process to kill")


async def _faults(
    run: asyncio.subprocess.Process, postgres: CuttableProxy, nats: OwnNats, buyers: Buyers
) -> None:
    await asyncio.sleep(2)
    await postgres.cut()
    await asyncio.sleep(4)
    await postgres.restore()
    await asyncio.sleep(2)
    burst = asyncio.create_task(buyers.burst(BUYERS))
    await asyncio.sleep(0.05)
    _kill(run, "gateway")
    await asyncio.sleep(3)
    await nats.stop()
    await asyncio.sleep(4)
    await nats.start()
    await asyncio.sleep(1)
    _kill(run, "relay+projector")
    await asyncio.sleep(2)
    _kill(run, "sweeper+mailer+payments")
    await asyncio.sleep(2)
    await postgres.cut()
    _kill(run, "gateway")  # its restarts find no database, longer than five restarts take
    await asyncio.sleep(LONG_OUTAGE_SECONDS)
    await postgres.restore()
    buyers.faults_over.set()
    await burst


_HELD_TWICE = """
    WITH moves AS (
        SELECT s->>'section_id' AS section, s->>'row' AS row, s->>'seat_number' AS number,
               CASE e.type WHEN 'SeatsHeld' THEN 1 ELSE -1 END AS delta
        FROM events e, jsonb_array_elements(e.data->'seats') AS s
        WHERE e.stream_id = $1 AND e.type IN ('SeatsHeld', 'SeatsReleased'))
    SELECT count(*) FILTER (WHERE held > 1) AS twice, count(*) FILTER (WHERE held = 1) AS held
    FROM (SELECT sum(delta) AS held FROM moves GROUP BY section, row, number) per_seat"""
_PAID_WITHOUT_TICKETS = """
    SELECT count(*) FROM events o
    WHERE o.type = 'PurchaseOpened' AND EXISTS (
        SELECT 1 FROM events p WHERE p.stream_id = o.stream_id AND p.type = 'PurchasePaid')
      AND jsonb_array_length(o.data->'tickets') <> (
        SELECT count(*) FROM events t
        WHERE t.type = 'TicketIssued' AND t.data->>'purchase_token' = o.data->>'token')"""


async def _behind(pool: asyncpg.Pool, event_id: int) -> list[str]:
    """What has not caught up with the store yet (empty once everything has)."""
    head = await pool.fetchrow(
        "SELECT tx_id::text::bigint AS tx_id, position FROM events"
        " ORDER BY tx_id DESC, position DESC LIMIT 1"
    )
    relay = await pool.fetchrow(
        "SELECT tx_id::text::bigint AS tx_id, position FROM relay_checkpoint"
    )
    behind = [] if relay and tuple(relay) == tuple(head) else ["relay"]
    for projection in all_projections().values():
        at = await read_checkpoint(pool, live_schema(projection))
        if (at.tx_id, at.position) != (head["tx_id"], head["position"]):
            behind.append(projection.name)
    paid = await pool.fetch(
        "SELECT data->>'token' AS token FROM events WHERE type = 'PurchasePaid'"
    )
    purchases = live_schema(all_projections()["purchases"])
    shown_paid = await pool.fetchval(
        f"SELECT count(*) FROM {purchases}.purchases WHERE status = 'paid'"
    )
    if shown_paid != len(paid):
        behind.append("purchases read model")
    queued = await pool.fetchval(
        "SELECT count(*) FROM mail_outbox WHERE kind = 'confirmation'"
        " AND purchase_token = ANY($1::text[])",
        [r["token"] for r in paid],
    )
    if queued != len(paid):
        behind.append("confirmation e-mails")
    return behind


@pytest.mark.timeout(300)
async def test_a_sale_through_killed_processes_and_database_and_nats_outages(
    database: Database, tmp_path: Path
) -> None:
    pool = database.pool
    token, event_id, type_id = await small_event(pool, SEATS)
    db = urlsplit(database.url)
    postgres = CuttableProxy(db.hostname or "127.0.0.1", db.port or 5432)
    await postgres.restore()
    nats = OwnNats(tmp_path / "jetstream")
    await nats.start()
    port, sim_port = free_port(), free_port()
    run_id = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")} | {
        "DATABASE_URL": through(database.url, postgres.port),
        "NATS_URL": nats.url,
        "LINJERUM_NATS_STREAM": f"FAULTS_{run_id.upper()}",
        "LINJERUM_SUBJECT_PREFIX": f"faults.{run_id}",
        "STRIPE_SIM_PORT": str(sim_port),
        "LINJERUM_LOG_LEVEL": "warning",
    }
    log = tmp_path / "run.log"
    argv = ["run", "--no-seed", "--port", str(port), "--data-dir", str(tmp_path / "d")]
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *argv,
        stdout=log.open("w"),
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    buyers = Buyers(port, sim_port, token, type_id)
    try:
        async with aiohttp.ClientSession(headers=buyers.headers) as session:
            deadline = time.monotonic() + 60
            while (await buyers._call(session, "GET", f"{buyers.api}/events/show"))[0] != 200:
                assert run.returncode is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
        await asyncio.gather(buyers.run(), _faults(run, postgres, nats, buyers))
        deadline = time.monotonic() + RECOVER_SECONDS
        while behind := await _behind(pool, event_id):
            assert time.monotonic() < deadline, f"never caught up: {behind}"
            await asyncio.sleep(1)
    finally:
        if run.returncode is None:
            run.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(run.wait(), 30)
            except TimeoutError:
                run.kill()
        await nats.stop()
        await postgres.cut()

    seen = buyers.seen
    assert len(seen.created) >= 100 and seen.created_after_faults > 0, seen.answers
    assert seen.gave_up == 0, seen.answers  # a retry under its key got an answer in the end
    held = await pool.fetchrow(_HELD_TWICE, f"event-{event_id}")
    assert held["twice"] == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM (SELECT stream_id FROM events WHERE type = 'PurchasePaid'"
            " GROUP BY stream_id HAVING count(*) > 1) twice"
        )
        == 0
    )
    assert await pool.fetchval(_PAID_WITHOUT_TICKETS) == 0
    ticketed = await pool.fetchrow(
        "SELECT count(*) AS tickets, count(DISTINCT data->'seat') AS seats FROM events"
        " WHERE type = 'TicketIssued'"
    )
    assert ticketed["tickets"] == ticketed["seats"]
    stored = await pool.fetch(
        "SELECT stream_id, count(*) FILTER (WHERE type = 'PurchasePaid') AS paid FROM events"
        " WHERE stream_id = ANY($1::text[]) AND type IN ('PurchaseOpened', 'PurchasePaid')"
        " GROUP BY stream_id",
        [f"purchase-{t}" for t in seen.created.values()],
    )
    assert len(stored) == len(set(seen.created.values()))
    paid = {r["stream_id"].removeprefix("purchase-") for r in stored if r["paid"]}
    assert seen.paid <= paid
    # Every purchase opened holds its seats: none is left opened under a key nobody was told of.
    opened = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'PurchaseOpened'")
    assert opened == len(stored), "a purchase was opened that no buyer was answered with"
