"""On-sale benchmark: one event of at least 2,000 seats and at least 5,000 buyers at 200 or more
concurrent connections. Each buyer auto-selects 1-4 seats, opens a purchase with them, pays
through the Stripe simulator and polls until the purchase is paid. Prints purchases per second,
p50/p99 of each step, seats sold against capacity (oversold must be 0, checked in the event
store), concurrency conflicts and retries, and the time to sell out; beside the single-row
INSERT ceiling of the same database measured in the same run.

    make bench                                   # embedded servers under .linjerum-bench/
    DATABASE_URL=... NATS_URL=... .venv/bin/python bench/onsale.py --buyers 5000

The service runs as in compose.yaml, one `linjerum` process per component (gateway, relay,
projector; `--gateways N` runs N gateways, each buyer staying with one, as behind a load
balancer with sticky sessions, the simulator's webhooks going to the first), and the Stripe
simulator in a process of its own, as Stripe is someone else's machine (`--layout single`
runs everything, simulator, mailer and sweeper included, in one `linjerum run` process
instead). This process and `--load-processes` - 1 others are the load generator. The database
and the NATS stream are the run's own and removed at the end. Traffic goes to 127.0.0.1 only;
every loop is bounded in count and in time.

A buyer whose POST /purchases is refused with 409 seats_taken or insufficient_availability
(buyers served by different gateways can be offered the same seats, and the availability
read model auto-select reads lags the event stream a little) selects again, at most --attempts
times in all, then gives up. A buyer takes what auto-select offers, fewer seats than wanted
included; none offered means sold out. For comparison, `--pick server` leaves the seats to the
sales desk: POST /purchases without selected_seats, asking for one seat fewer after each
insufficient_availability.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
import psutil
from aiohttp import web

from domain import catalog as c
from infra.apikeys import create_key
from infra.db import create_pool, migrate
from infra.embedded import free_port
from infra.eventstore import Metadata
from infra.logging import configure_logging
from infra.payments import (
    SIMULATOR_API_KEY,
    SIMULATOR_PUBLISHABLE_KEY,
    SIMULATOR_WEBHOOK_SECRET,
)
from infra.settings import Settings
from projections.rebuild import rebuild
from projections.registry import all_projections
from services.dev.stripe_sim import create_simulator
from services.runtime import connected
from services.usecases import catalog_commands

HOST = "127.0.0.1"
META = Metadata(actor="bench")
REPO = Path(__file__).resolve().parents[1]
SLUG = "show"
SELL_OUT_TARGET_S = 10.0
PURCHASE_P99_TARGET_MS = 250.0
RETRYABLE = ("seats_taken", "insufficient_availability")
READY = "linjerum is running on"


# --- shared with bench/tickets.py: scratch database, processes, statistics ----------------------


@contextlib.asynccontextmanager
async def scratch(data_dir: str, label: str) -> AsyncIterator[Settings]:
    """Settings whose database and NATS stream are this run's own (the configured servers, or
    the embedded ones under `data_dir`); both are removed on the way out."""
    base = Settings.from_env(data_dir=Path(data_dir))
    base.data_dir.mkdir(parents=True, exist_ok=True)
    async with connected(base) as live:
        run = uuid.uuid4().hex[:8]
        database = f"linjerum_bench_{label}_{run}"
        admin = await asyncpg.connect(live.database_url)
        await admin.execute(f'CREATE DATABASE "{database}"')
        settings = replace(
            live,
            database_url=live.database_url.rsplit("/", 1)[0] + "/" + database,
            nats_stream=f"BENCH_{label.upper()}_{run.upper()}",
            subject_prefix=f"bench.{label}.{run}",
        )
        try:
            yield settings
        finally:
            with contextlib.suppress(Exception):
                nc = await nats.connect(settings.nats_url)
                with contextlib.suppress(Exception):
                    await nc.jetstream().delete_stream(settings.nats_stream)
                await nc.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


def database_name(settings: Settings) -> str:
    return settings.database_url.rsplit("/", 1)[1].split("?")[0]


def service_env(settings: Settings, *, log_level: str, pool_size: int) -> dict[str, str]:
    """The environment of a `linjerum` process pointed at the scratch database and stream."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "NATS_URL": settings.nats_url,
        "LINJERUM_NATS_STREAM": settings.nats_stream,
        "LINJERUM_SUBJECT_PREFIX": settings.subject_prefix,
        "LINJERUM_LOG_LEVEL": log_level,
        "LINJERUM_DB_POOL_SIZE": str(pool_size),
    }


@dataclass
class Component:
    """A process started by the benchmark; its stdout and stderr are kept in files."""

    name: str
    process: asyncio.subprocess.Process
    out: Path
    err: Path

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        logs: Path,
        *,
        ready: str | None = None,
        timeout: float = 60.0,
    ) -> Component:
        """Starts `argv`; with `ready`, waits (at most `timeout` s) for that text on stdout."""
        logs.mkdir(parents=True, exist_ok=True)
        out, err = logs / f"{name}.out", logs / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=stdout, stderr=stderr, env=env, cwd=REPO
            )
        component = cls(name, process, out, err)
        deadline = time.monotonic() + timeout
        while ready is not None and ready not in out.read_text(errors="replace"):
            if process.returncode is not None or time.monotonic() > deadline:
                await component.stop()
                tail = err.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start:\n{tail}")
            await asyncio.sleep(0.05)
        return component

    @property
    def pid(self) -> int:
        return self.process.pid

    def count_in_log(self, needle: str) -> int:
        """Lines of stderr (the structlog output) that contain `needle`."""
        with self.err.open(errors="replace") as lines:
            return sum(needle in line for line in lines)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def linjerum(data_dir: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "--data-dir", str(data_dir), *command]


@dataclass
class Profiler:
    """py-spy sampling one process (pausing it for each sample, so every stack is whole),
    stopped with SIGINT so it writes its collapsed stacks."""

    process: asyncio.subprocess.Process | None
    path: Path

    @classmethod
    async def attach(cls, pid: int, path: Path) -> Profiler:
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            print(f"py-spy is not installed next to {sys.executable}: no profile", flush=True)
            return cls(None, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # py-spy attaches before the phase starts
        return cls(process, path)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass
class Step:
    """The latencies of one kind of request, and what went wrong with it."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    def row(self, seconds: float | None = None) -> str:
        rate = f"{len(self.latencies) / seconds:8.0f}" if seconds else f"{'':8}"
        worst = max(self.latencies, default=float("nan")) * 1000
        errors = ", ".join(f"{k} {v}" for k, v in self.errors.most_common()) or "-"
        return (
            f"{self.name:46} {len(self.latencies):7d} {rate} {self.percentile_ms(0.5):8.1f}"
            f" {self.percentile_ms(0.99):8.1f} {worst:8.1f}  {errors}"
        )


STEP_HEADER = (
    f"{'step':46} {'count':>7} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  errors"
)


class Cpu:
    """CPU of each server process, the scratch database's backends, this process and the whole
    machine between `start()` and `stop()`, in cores (1.0 = one core busy all the time)."""

    def __init__(self, servers: dict[str, int], database: str) -> None:
        self._servers = {name: psutil.Process(pid) for name, pid in servers.items()}
        self._database = database
        self.used: dict[str, float] = {}
        self._before: dict[str, float] = {}
        self._started = 0.0
        self._wall = 1.0

    def _backends(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            title = " ".join(process.info["cmdline"] or ())
            if title.startswith("postgres:") and f" {self._database} " in title:
                found.append(process)
        return found

    @staticmethod
    def _seconds(processes: Sequence[psutil.Process]) -> float:
        total = 0.0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                total += sum(process.cpu_times()[:2])
        return total

    def _sample(self) -> dict[str, float]:
        machine = psutil.cpu_times()
        sample = {name: self._seconds([p]) for name, p in self._servers.items()}
        sample["database"] = self._seconds(self._backends())
        sample["load generator"] = time.process_time()
        sample["machine"] = (
            machine.user
            + machine.system
            + sum(getattr(machine, extra, 0.0) for extra in ("nice", "irq", "softirq"))
        )
        return sample

    def start(self) -> None:
        self._started = time.perf_counter()
        self._before = self._sample()

    def stop(self) -> None:
        after = self._sample()
        self._wall = max(time.perf_counter() - self._started, 1e-9)
        self.used = {name: (after[name] - self._before[name]) / self._wall for name in after}

    def add(self, name: str, seconds: float) -> None:
        """CPU seconds spent elsewhere in the measured time (the load processes')."""
        self.used[name] = self.used.get(name, 0.0) + seconds / self._wall

    def of(self, name: str) -> float:
        return self.used.get(name, 0.0)

    def line(self) -> str:
        """The rest of the machine is other people's work: it skews the figures."""
        parts = {name: used for name, used in self.used.items() if name != "machine"}
        parts["rest of the machine"] = max(0.0, self.of("machine") - sum(parts.values()))
        shown = ", ".join(f"{name} {used:.2f}" for name, used in parts.items())
        return f"CPU in cores (1.0 = one of {psutil.cpu_count()} cores): {shown}"


async def insert_ceiling(pool: asyncpg.Pool, seconds: float, workers: int) -> float:
    """Plain single-row INSERT commits per second from `workers` connections (as in
    bench/eventstore.py): what this database can commit, one row at a time."""
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_plain (id bigserial, v text)")
    deadline = time.perf_counter() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline and done < 2_000_000:
            await pool.execute("INSERT INTO bench_plain (v) VALUES ($1)", "x")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    rate = done / (time.perf_counter() - started)
    await pool.execute("DROP TABLE bench_plain")
    return rate


async def rebuild_read_models(pool: asyncpg.Pool, timeout: float = 60.0) -> None:
    """Every read model rebuilt once the events are settled (as bench/reads.py does)."""
    deadline = time.monotonic() + timeout
    settled = (
        "SELECT coalesce(max(tx_id) < pg_snapshot_xmin(pg_current_snapshot()), true) FROM events"
    )
    while not await pool.fetchval(settled):
        if time.monotonic() > deadline:
            raise RuntimeError("events still not settled: a long transaction on the server?")
        await asyncio.sleep(0.1)
    for projection in all_projections().values():
        await rebuild(pool, projection)


@dataclass(frozen=True)
class BenchEvent:
    organization_id: int
    event_id: int
    ticket_type_id: int
    capacity: int


async def create_event(
    pool: asyncpg.Pool,
    *,
    rows: int,
    seats_per_row: int,
    price_cents: int,
    stripe_account: str | None,
    max_per_purchase: int = c.MAX_PER_PURCHASE,
) -> BenchEvent:
    """A fresh organization with one published event on sale now: one seated section of
    `rows` rows of `seats_per_row` seats, one ticket type for all of them."""
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    org = await catalog_commands.register_organization(
        pool,
        c.RegisterOrganization(
            slug=slug, name="Bench Teater", currency="DKK", stripe_account_id=stripe_account
        ),
        META,
    )
    section = c.SectionPlan(
        name="Parket",
        width=40.0,
        height=40.0,
        rows=[c.Row(identifier=f"R{r}", start=1, end=seats_per_row) for r in range(1, rows + 1)],
    )
    venue_id = await catalog_commands.register_venue(
        pool, org, c.RegisterVenue(key="sal", name="Store Sal", sections=[section]), META
    )
    venue = await catalog_commands.load_venue(pool, venue_id)
    plan = c.TicketTypePlan(
        name="Alm",
        price_cents=price_cents,
        max_per_purchase=max_per_purchase,
        section_ids=[venue.sections[0].id],
    )
    event_id = await catalog_commands.schedule_event(
        pool,
        org,
        c.ScheduleEvent(
            slug=SLUG,
            name="Premiere",
            venue_id=venue_id,
            event_date=datetime.now(UTC) + timedelta(days=3),
            publish=True,
            ticket_types=[plan],
        ),
        META,
    )
    type_id = await pool.fetchval(
        "SELECT (data->'ticket_types'->0->>'id')::bigint FROM events"
        " WHERE stream_id = $1 AND version = 1",
        f"event-{event_id}",
    )
    return BenchEvent(org, event_id, int(type_id), rows * seats_per_row)


async def wait_until_served(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    """Polls `url` until it answers 200 (the read models have the event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


# --- the on-sale ----------------------------------------------------------------------------------


@dataclass
class Sale:
    """What the buyers saw, counted as they go; times are seconds since the on-sale began."""

    capacity: int
    steps: dict[str, Step] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    held: list[tuple[float, int]] = field(default_factory=list)
    paid: list[tuple[float, int]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the load processes other than this one

    def step(self, name: str) -> Step:
        return self.steps.setdefault(name, Step(name))

    def merge(self, other: Sale) -> None:
        """Another load process's share of the same on-sale."""
        for name, theirs in other.steps.items():
            mine = self.step(name)
            mine.latencies += theirs.latencies
            mine.errors.update(theirs.errors)
        self.outcomes.update(other.outcomes)
        self.conflicts.update(other.conflicts)
        self.retries += other.retries
        self.held += other.held
        self.paid += other.paid
        self.seconds = max(self.seconds, other.seconds)
        self.cpu_seconds += other.cpu_seconds

    def _all_at(self, moments: list[tuple[float, int]]) -> float | None:
        """When the seats counted in `moments` first reached the capacity."""
        total = 0
        for at, seats in sorted(moments):
            total += seats
            if total >= self.capacity:
                return at
        return None

    @property
    def held_out_at(self) -> float | None:
        return self._all_at(self.held)

    @property
    def sold_out_at(self) -> float | None:
        return self._all_at(self.paid)

    @property
    def seats_paid(self) -> int:
        return sum(seats for _, seats in self.paid)

    @property
    def purchases_paid(self) -> int:
        return len(self.paid)

    @property
    def last_paid_at(self) -> float:
        return max((at for at, _ in self.paid), default=0.0)


@dataclass(frozen=True)
class Share:
    """One load process's part of the on-sale: every `of`-th connection and buyer from
    `index`, starting at `started` (time.perf_counter, the system-wide monotonic clock on
    Linux, so every process measures from the same moment)."""

    index: int = 0
    of: int = 1
    started: float = 0.0


class Buyers:
    """The load generator: `connections` workers, each running one buyer at a time."""

    def __init__(
        self,
        args: argparse.Namespace,
        event: BenchEvent,
        gateways: list[str],
        simulator: str,
        token: str,
    ) -> None:
        self.share = Share()
        self.args = args
        self.event = event
        self.apis = [f"{gateway}/api/v1" for gateway in gateways]
        self.api = self.apis[0]
        self.simulator = simulator
        self.headers = {"Authorization": f"Bearer {token}"}
        self.sale = Sale(event.capacity)
        self._next = 0

    async def _call(
        self,
        session: aiohttp.ClientSession,
        step: str,
        method: str,
        url: str,
        body: object = None,
    ) -> tuple[int, Any]:
        """One request; its latency goes to `step` (a failed connection to its errors)."""
        started = time.perf_counter()
        try:
            async with session.request(method, url, json=body) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.sale.step(step).errors[type(exc).__name__] += 1
            return 0, None
        recorded = self.sale.step(step)
        recorded.latencies.append(time.perf_counter() - started)
        if status >= 500:
            recorded.errors[f"HTTP {status}"] += 1
        return status, payload

    async def _offered(
        self, api: aiohttp.ClientSession, base: str, wanted: int
    ) -> list[Any] | None:
        """The seats auto-select offers (fewer than wanted near the end); None if it failed."""
        status, selection = await self._call(
            api,
            "POST /events/{slug}/seats/auto-select",
            "POST",
            f"{base}/events/{SLUG}/seats/auto-select",
            {"ticket_type_id": self.event.ticket_type_id, "count": wanted},
        )
        if status != 200:
            self.sale.outcomes[f"auto-select failed (HTTP {status})"] += 1
            return None
        return list(selection["seats"])

    async def _select_and_open(
        self, api: aiohttp.ClientSession, base: str, wanted: int, index: int
    ) -> dict[str, Any] | None:
        """Auto-select, then POST /purchases with the seats offered (with --pick server, no
        selection: the sales desk picks); again on a seat conflict, up to --attempts times.
        The created purchase, or None (the outcome is counted)."""
        sale = self.sale
        type_id = str(self.event.ticket_type_id)
        for attempt in range(self.args.attempts):
            if attempt:
                sale.retries += 1
            order: dict[str, Any] = {
                "event_slug": SLUG,
                "quantities": {type_id: wanted},
                "buyer": {"name": f"Buyer {index}", "email": f"buyer{index}@example.com"},
            }
            if self.args.pick == "auto-select":
                seats = await self._offered(api, base, wanted)
                if seats is None:
                    return None
                if not seats:
                    sale.outcomes["sold out (auto-select offered no seat)"] += 1
                    return None
                order["quantities"] = {type_id: len(seats)}
                order["selected_seats"] = {type_id: seats}
            started = time.perf_counter()
            status, created = await self._call(
                api, "POST /purchases", "POST", f"{base}/purchases", order
            )
            error = created.get("error") if isinstance(created, dict) else None
            self.sale.step(f"  POST /purchases {status} {error or ''}".rstrip()).latencies.append(
                time.perf_counter() - started
            )
            if status == 201:
                sale.held.append((self._since_start(), len(created["purchase"]["tickets"])))
                return created
            if status == 409 and error in RETRYABLE:
                sale.conflicts[error] += 1
                if self.args.pick == "server" and error == "insufficient_availability":
                    wanted -= 1  # fewer seats left than wanted: take fewer
                    if not wanted:
                        sale.outcomes["sold out (no seat left)"] += 1
                        return None
                continue
            sale.outcomes[f"purchase refused (HTTP {status} {error})"] += 1
            return None
        sale.outcomes[f"gave up after {self.args.attempts} seat conflicts"] += 1
        return None

    async def _pay(
        self,
        api: aiohttp.ClientSession,
        sim: aiohttp.ClientSession,
        base: str,
        created: dict[str, Any],
    ) -> bool:
        """The buyer pays (the simulator then sends the webhook), then polls until paid."""
        sale = self.sale
        purchase, payment = created["purchase"], created["payment"]
        intent = payment["stripe_payment_intent_id"]
        status, _ = await self._call(
            sim,
            "POST /_sim/payment_intents/{id}/succeed",
            "POST",
            f"{self.simulator}/_sim/payment_intents/{intent}/succeed",
        )
        if status != 200:
            sale.outcomes[f"payment failed (HTTP {status})"] += 1
            return False
        confirmed = time.perf_counter()
        deadline = confirmed + self.args.poll_timeout
        for _ in range(self.args.max_polls):
            status, polled = await self._call(
                api, "GET /purchases/{token}", "GET", f"{base}/purchases/{purchase['token']}"
            )
            if status == 200 and polled["purchase"]["paid_at"]:
                now = time.perf_counter()
                sale.step("confirmed -> paid seen (webhook)").latencies.append(now - confirmed)
                sale.paid.append((self._since_start(), len(purchase["tickets"])))
                sale.outcomes["paid"] += 1
                return True
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(self.args.poll_interval)
        sale.outcomes["not seen paid in time"] += 1
        return False

    async def _buy(
        self,
        api: aiohttp.ClientSession,
        sim: aiohttp.ClientSession,
        index: int,
        rng: random.Random,
    ) -> None:
        started = time.perf_counter()
        # A buyer stays with one gateway, as behind a load balancer with sticky sessions.
        base = self.apis[index % len(self.apis)]
        created = await self._select_and_open(api, base, rng.randint(1, 4), index)
        if created is not None and await self._pay(api, sim, base, created):
            self.sale.step("buyer: first request -> paid").latencies.append(
                time.perf_counter() - started
            )

    async def run(self, share: Share) -> Sale:
        self.share, self._next = share, share.index
        connections = self.args.connections
        timeout = aiohttp.ClientTimeout(total=30)

        def session(headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=connections)
            return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)

        async with session(self.headers) as api, session() as sim:
            deadline = share.started + self.args.max_seconds

            async def worker(number: int) -> None:
                rng = random.Random(self.args.seed * 100_003 + number)
                while self._next < self.args.buyers and time.perf_counter() < deadline:
                    index = self._next
                    self._next += self.share.of
                    await self._buy(api, sim, index, rng)

            await asyncio.sleep(max(0.0, self.share.started - time.perf_counter()))
            mine = range(self.share.index, connections, self.share.of)
            await asyncio.gather(*(worker(n) for n in mine))
            self.sale.seconds = self._since_start()
        left = range(self._next, self.args.buyers, self.share.of)
        self.sale.outcomes["not started (time bound)"] = len(left)
        return self.sale

    def _since_start(self) -> float:
        return time.perf_counter() - self.share.started


class LoadProcesses:
    """The buyers split over several processes: one Python event loop driving 200 connections
    queues the answers that arrive together behind each other (in the on-sale's first second,
    for up to a hundred milliseconds), and that wait would be counted as the service's."""

    def __init__(self, pool: ProcessPoolExecutor | None, count: int) -> None:
        self._pool = pool
        self._count = count

    @classmethod
    async def start(cls, count: int) -> LoadProcesses:
        """Spawns the processes before the on-sale begins (each waits until all have started)."""
        if count == 1:
            return cls(None, 1)
        pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, time.sleep, 0.5) for _ in range(count)))
        return cls(pool, count)

    async def run(self, buyers: Buyers) -> Sale:
        started = time.perf_counter() + (0.2 if self._pool else 0.0)
        shares = [Share(i, self._count, started) for i in range(self._count)]
        if self._pool is None:
            return await buyers.run(shares[0])
        loop = asyncio.get_running_loop()
        try:
            parts = await asyncio.gather(
                *(loop.run_in_executor(self._pool, _buy_share, buyers, s) for s in shares)
            )
        finally:
            self._pool.shutdown()
        sale = parts[0]
        for part in parts[1:]:
            sale.merge(part)
        return sale


def _buy_share(buyers: Buyers, share: Share) -> Sale:
    cpu = time.process_time()
    sale = asyncio.run(buyers.run(share))
    sale.cpu_seconds = time.process_time() - cpu
    return sale


# --- checking the result in the event store ----------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What the event store says was sold."""

    seats_held_now: int
    seats_held_twice: int
    most_holds_on_a_seat: int
    tickets_issued: int
    distinct_ticketed_seats: int
    purchases_paid: int

    def oversold(self, capacity: int) -> int:
        duplicates = self.tickets_issued - self.distinct_ticketed_seats
        return self.seats_held_twice + max(0, self.tickets_issued - capacity) + duplicates


async def stored_sales(pool: asyncpg.Pool, event_id: int) -> Stored:
    held = await pool.fetchrow(
        """
        WITH moves AS (
            SELECT s->>'section_id' AS section, s->>'row' AS row, s->>'seat_number' AS number,
                   CASE e.type WHEN 'SeatsHeld' THEN 1 ELSE -1 END AS delta
            FROM events e, jsonb_array_elements(e.data->'seats') AS s
            WHERE e.stream_id = $1 AND e.type IN ('SeatsHeld', 'SeatsReleased'))
        SELECT count(*) FILTER (WHERE held = 1) AS held,
               count(*) FILTER (WHERE held > 1) AS twice,
               coalesce(max(held), 0) AS most
        FROM (SELECT sum(delta) AS held FROM moves GROUP BY section, row, number) per_seat
        """,
        f"event-{event_id}",
    )
    issued = await pool.fetchrow(
        "SELECT count(*) AS tickets, count(DISTINCT data->'seat') AS seats FROM events"
        " WHERE type = 'TicketIssued' AND data->>'event_id' = $1",
        str(event_id),
    )
    paid = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'PurchasePaid'")
    return Stored(
        seats_held_now=held["held"] + held["twice"],
        seats_held_twice=held["twice"],
        most_holds_on_a_seat=held["most"],
        tickets_issued=issued["tickets"],
        distinct_ticketed_seats=issued["seats"],
        purchases_paid=paid,
    )


# --- running it -----------------------------------------------------------------------------------


@dataclass
class Setup:
    event: BenchEvent
    token: str
    ceiling: float
    events_before: int


async def prepare(settings: Settings, args: argparse.Namespace) -> Setup:
    """Schema, the event, its read models, an API key the buyers cannot exhaust, and the
    INSERT ceiling of this database (measured while nothing else of the run is busy)."""
    pool = await create_pool(settings.database_url, args.ceiling_connections + 2)
    try:
        await migrate(pool)
        event = await create_event(
            pool,
            rows=args.rows,
            seats_per_row=args.seats_per_row,
            price_cents=35000,
            stripe_account="acct_sim_bench",
            max_per_purchase=4,
        )
        await rebuild_read_models(pool)
        issued = await create_key(
            pool, event.organization_id, "bench", rate_limit_per_minute=10_000_000, metadata=META
        )
        ceiling = await insert_ceiling(pool, args.ceiling_seconds, args.ceiling_connections)
        events = await pool.fetchval("SELECT count(*) FROM events")
        return Setup(event, issued.token, ceiling, events)
    finally:
        await pool.close()


async def start_service(
    settings: Settings, args: argparse.Namespace, logs: Path
) -> tuple[list[Component], list[str], str]:
    """The service's processes and the simulator; returns them, the gateways' base URLs and
    the simulator's. The simulator's webhooks go to the first gateway."""
    env = service_env(settings, log_level=args.log_level, pool_size=args.pool_size)
    ports = [free_port() for _ in range(args.gateways if args.layout == "split" else 1)]
    gateway_port, simulator_port = ports[0], free_port()
    hook = f"http://{HOST}:{gateway_port}/api/v1/webhooks/stripe"
    data = logs / "data"
    started: list[Component] = []
    try:
        if args.layout == "single":
            env["STRIPE_SIM_PORT"] = str(simulator_port)
            command = linjerum(
                data, "run", "--no-seed", "--host", HOST, "--port", str(gateway_port)
            )
            started.append(await Component.start("linjerum-run", command, env, logs, ready=READY))
        else:
            simulator = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve-simulator",
                f"--port={simulator_port}",
                f"--webhook-url={hook}",
            ]
            started.append(
                await Component.start("simulator", simulator, env, logs, ready="simulator on")
            )
            env |= {
                "STRIPE_SECRET_KEY": SIMULATOR_API_KEY,
                "STRIPE_PUBLISHABLE_KEY": SIMULATOR_PUBLISHABLE_KEY,
                "STRIPE_WEBHOOK_SECRET": SIMULATOR_WEBHOOK_SECRET,
                "STRIPE_API_BASE": f"http://{HOST}:{simulator_port}",
            }
            for component in ("relay", "projector"):
                started.append(
                    await Component.start(component, linjerum(data, component), env, logs)
                )
            for n, port in enumerate(ports, 1):
                gateway = linjerum(data, "gateway", "--host", HOST, "--port", str(port))
                name = "gateway" if n == 1 else f"gateway {n}"
                started.append(await Component.start(name, gateway, env, logs, ready=READY))
    except BaseException:
        for component in started:
            await component.stop()
        raise
    return started, [f"http://{HOST}:{p}" for p in ports], f"http://{HOST}:{simulator_port}"


async def warm_up(buyers: Buyers) -> None:
    """The read models have the event, and every server has answered a few requests."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=buyers.headers) as session:
        await wait_until_served(session, f"{buyers.api}/events/{SLUG}", 60)
        for _ in range(5):
            async with session.post(
                f"{buyers.api}/events/{SLUG}/seats/auto-select",
                json={"ticket_type_id": buyers.event.ticket_type_id, "count": 2},
            ) as response:
                await response.read()
        async with session.get(f"{buyers.simulator}/_sim/events") as response:
            await response.read()


def gateways_of(components: Sequence[Component]) -> list[Component]:
    """The processes serving the API, the first one receiving the simulator's webhooks."""
    return [c for c in components if c.name.startswith("gateway") or c.name == "linjerum-run"]


def report(
    args: argparse.Namespace,
    setup: Setup,
    sale: Sale,
    stored: Stored,
    cpu: Cpu,
    desk: str,
    events: int,
    served: str,
) -> None:
    capacity = setup.event.capacity
    print(
        f"on-sale: 1 event, {capacity} seats ({args.rows} rows of {args.seats_per_row}),"
        f" {args.buyers} buyers wanting 1-4 seats each, {args.connections} connections;"
        f" seats picked by {args.pick}; layout {args.layout} ({args.gateways} gateway process(es)),"
        f" gateway pool {args.pool_size},"
        f" log level {args.log_level},"
        f" poll every {args.poll_interval * 1000:g} ms, {psutil.cpu_count()} cores"
    )
    print(STEP_HEADER)
    print("-" * len(STEP_HEADER))
    for name in sorted(sale.steps, key=_step_order):
        print(sale.steps[name].row(sale.seconds))
    paid_rate = sale.purchases_paid / sale.last_paid_at if sale.last_paid_at else 0.0
    print(
        "(indented rows split the one above by answer; 'confirmed -> paid seen' is the"
        " simulator's webhook and the polling interval together; per s: over the whole on-sale)"
    )
    print()
    print(
        f"seats sold (paid)               {sale.seats_paid:6d} of {capacity}"
        f"   event store: {stored.tickets_issued} tickets issued on"
        f" {stored.distinct_ticketed_seats} distinct seats, {stored.seats_held_now} seats held,"
        f" most holds on one seat {stored.most_holds_on_a_seat}"
    )
    print(f"oversold                        {stored.oversold(capacity):6d}")
    print(
        f"purchases paid                  {sale.purchases_paid:6d}"
        f"   {paid_rate:.0f} purchases/s ({sale.seats_paid / max(sale.last_paid_at, 1e-9):.0f}"
        f" seats/s) from the first request to the last payment at {sale.last_paid_at:.2f} s;"
        f" event store: {stored.purchases_paid} PurchasePaid"
    )
    sold_out = f"{sale.sold_out_at:.2f} s" if sale.sold_out_at is not None else "not sold out"
    held_out = f"{sale.held_out_at:.2f} s" if sale.held_out_at is not None else "never"
    print(f"time to sell out (all paid)     {sold_out}   (every seat held at {held_out})")
    conflicts = ", ".join(f"409 {k} {v}" for k, v in sale.conflicts.most_common()) or "none"
    print(
        f"seat conflicts at POST /purchases: {conflicts}; retries (a buyer's further"
        f" attempts) {sale.retries}; sales-desk conflicts (gateway log): {desk}"
    )
    print("buyers: " + ", ".join(f"{k} {v}" for k, v in sale.outcomes.most_common() if v))
    print(
        f"ceiling: plain single-row INSERT commits/s {setup.ceiling:.0f}"
        f" ({args.ceiling_connections} connections, {args.ceiling_seconds:g} s, same database)"
        f" beside {paid_rate:.0f} paid purchases/s and {events / sale.seconds:.0f} events"
        f" appended/s ({events} events in the on-sale)"
    )
    print(cpu.line() + f", over the {sale.seconds:.2f} s of the on-sale")
    print(served)
    p99 = (
        sale.steps["POST /purchases"].percentile_ms(0.99) if "POST /purchases" in sale.steps else 0
    )
    met_sell_out = sale.sold_out_at is not None and sale.sold_out_at < SELL_OUT_TARGET_S
    oversold = stored.oversold(capacity)
    print(
        f"targets: sell-out of {capacity} seats < {SELL_OUT_TARGET_S:g} s: {sold_out},"
        f" {verdict(met_sell_out)}; p99 POST /purchases < {PURCHASE_P99_TARGET_MS:g} ms:"
        f" {p99:.0f} ms, {verdict(p99 < PURCHASE_P99_TARGET_MS)};"
        f" oversold = 0: {oversold}, {verdict(oversold == 0)}"
    )


async def served_purchases(pool: asyncpg.Pool) -> str:
    """POST /purchases as the gateways saw it (the activity log's duration, from the handler's
    start to its answer): the load generator's latency less its own queueing and the server's
    wait before the request's turn on the event loop."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99"
        " FROM api_activity WHERE method = 'POST' AND path = '/api/v1/purchases'"
    )
    if not row["n"]:
        return "POST /purchases in the gateways' activity log: none recorded"
    return (
        f"POST /purchases in the gateways' activity log (handler time): {row['n']} calls,"
        f" p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms"
    )


def _step_order(name: str) -> tuple[int, bool, str]:
    order = ["auto-select", "POST /purchases", "_sim", "confirmed", "GET /purchases", "buyer"]
    rank = next((i for i, key in enumerate(order) if key in name), len(order))
    return rank, name.startswith(" "), name


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    async with scratch(args.data_dir, "onsale") as settings:
        setup = await prepare(settings, args)
        logs = Path(args.data_dir).resolve() / f"onsale-{database_name(settings)}"
        components, gateway_urls, simulator_url = await start_service(settings, args, logs)
        profiler = None
        try:
            buyers = Buyers(args, setup.event, gateway_urls, simulator_url, setup.token)
            await warm_up(buyers)
            load = await LoadProcesses.start(args.load_processes)
            cpu = Cpu({p.name: p.pid for p in components}, database_name(settings))
            if args.py_spy:
                profiler = await Profiler.attach(gateways_of(components)[0].pid, Path(args.py_spy))
            cpu.start()
            sale = await load.run(buyers)
            cpu.stop()
            cpu.add("load generator", sale.cpu_seconds)
        finally:
            if profiler is not None:
                await profiler.stop()
            for component in reversed(components):
                await component.stop()
        if args.log_level in ("debug", "info"):
            desk = str(sum(g.count_in_log('"desk_conflict"') for g in gateways_of(components)))
        else:
            desk = f"not observable at log level {args.log_level} (use --log-level info)"
        pool = await create_pool(settings.database_url, 2)
        try:
            stored = await stored_sales(pool, setup.event.event_id)
            events = await pool.fetchval("SELECT count(*) FROM events") - setup.events_before
            served = await served_purchases(pool)
        finally:
            await pool.close()
        errors = sum(g.count_in_log('"level":"error"') for g in gateways_of(components))
        report(args, setup, sale, stored, cpu, desk, events, served)
        if errors or args.keep_logs:
            print(f"the service's logs are kept in {logs} (the gateway logged {errors} errors)")
        else:
            shutil.rmtree(logs, ignore_errors=True)
        if args.py_spy:
            print(f"gateway profile (py-spy collapsed stacks): {args.py_spy}")


async def serve_sim(args: argparse.Namespace) -> None:
    """--serve-simulator: the Stripe simulator alone, until SIGTERM or SIGINT; its address is
    printed once it listens."""
    configure_logging("warning")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        create_simulator(args.webhook_url, SIMULATOR_WEBHOOK_SECRET), access_log=None
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, args.port).start()
        print(f"Stripe simulator on http://{HOST}:{args.port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--buyers", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument(
        "--load-processes", type=int, default=2, help="processes the buyers are spread over"
    )
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--seats-per-row", type=int, default=50)
    parser.add_argument("--attempts", type=int, default=5, help="auto-selects per buyer, at most")
    parser.add_argument(
        "--pick",
        choices=("auto-select", "server"),
        default="auto-select",
        help="who picks the seats: the buyer through auto-select (the issue's flow), or the"
        " sales desk (POST /purchases without selected_seats), for comparison",
    )
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds")
    parser.add_argument("--poll-timeout", type=float, default=30.0, help="seconds per buyer")
    parser.add_argument("--max-polls", type=int, default=600, help="per buyer")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="the whole on-sale")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--layout", choices=("split", "single"), default="split")
    parser.add_argument(
        "--gateways", type=int, default=1, help="gateway processes (split layout), one port each"
    )
    parser.add_argument("--pool-size", type=int, default=10, help="the gateway's DB pool")
    parser.add_argument("--log-level", default="info", help="the service's (info: as deployed)")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument("--ceiling-connections", type=int, default=16)
    parser.add_argument("--py-spy", help="write the gateway's py-spy collapsed stacks here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service's logs")
    parser.add_argument("--data-dir", default=".linjerum-bench")
    parser.add_argument("--serve-simulator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--webhook-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.serve_simulator and (args.rows * args.seats_per_row < 1 or args.buyers < 1):
        parser.error("need at least one seat and one buyer")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    asyncio.run(serve_sim(arguments) if arguments.serve_simulator else main(arguments))
