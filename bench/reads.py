"""Read-path benchmark: requests per second, p50 and p99 of GET /api/v1/events/{slug}/availability
and GET /api/v1/events/{slug} at 64 concurrent connections, beside the ceiling of the same machine
measured in the same run: a bare aiohttp handler returning a constant JSON body.

    make bench                                  # embedded PostgreSQL under .linjerum-bench/
    DATABASE_URL=... .venv/bin/python bench/reads.py --rounds 5

The gateway (with its activity-log writer, as in production) and the bare handler each run in a
process of their own, started from this script with --serve, served the same way; this process is
the load generator, so on two cores the server and the client have one each. The demo catalog is
seeded into a scratch database, about 200 seats of hamlet-2026 are held so availability has seats
to report, and the database is dropped at the end. Traffic goes to 127.0.0.1 only, and every
loop is bounded in time and in request count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import psutil
from aiohttp import web

from domain.inventory import HeldSeat, SeatsHeld
from infra.apikeys import create_key
from infra.db import create_pool, migrate
from infra.eventstore import ANY_VERSION, Metadata, PendingAppend, append
from infra.logging import configure_logging
from infra.settings import Settings
from projections.rebuild import rebuild
from projections.registry import all_projections
from services.api import readmodel as rm
from services.api.activity import ActivityLog
from services.api.gateway import create_app
from services.dev.seed_demo import DEMO_ORGANIZATION, seed_demo
from services.runtime import connected
from services.usecases.catalog_commands import organization_id_by_slug
from services.usecases.purchases import Purchases
from services.usecases.ticket_documents import Documents

META = Metadata(actor="bench")
DATABASE = "linjerum_bench_reads"
EVENT = "hamlet-2026"
HOST = "127.0.0.1"
TARGET = 0.60
SEATS_PER_HOLD = 4
SENDER = "bench@example.com"
CONSTANT_BODY = b'{"status":"ok","service":"linjerum","version":1}'


# --- the server processes -----------------------------------------------------------------------


async def constant_json(_: web.Request) -> web.Response:
    """The ceiling: no database, no middleware, a body encoded once."""
    return web.Response(body=CONSTANT_BODY, content_type="application/json")


def bare_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/constant", constant_json)
    return app


async def serve(args: argparse.Namespace) -> None:
    """One server on an ephemeral port of 127.0.0.1, printed on stdout once it listens; it runs
    until SIGTERM or SIGINT. The gateway is wired as services/runtime.py `_serve_http` does."""
    configure_logging(args.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if args.serve == "gateway":
            pool = await create_pool(args.database_url, args.pool_size)
            stack.push_async_callback(pool.close)
            activity = ActivityLog(pool)
            stack.push_async_callback(activity.close)
            writer = asyncio.create_task(activity.run())
            stack.push_async_callback(_cancel, writer)
            sales = Purchases(pool, None)  # read endpoints only: no payment provider
            link = f"http://{HOST}/api/v1/tickets/attendee/{{token}}"
            app = create_app(pool, activity, sales, Documents(pool, sales.catalog, SENDER, link))
        else:
            app = bare_app()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, HOST, 0).start()
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        print(runner.addresses[0][1], flush=True)
        await stop.wait()
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@dataclass
class Server:
    """A server process started by this script and the port it listens on."""

    process: asyncio.subprocess.Process
    port: int

    @classmethod
    async def start(cls, *options: str, quiet: bool = False) -> Server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL if quiet else None,
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            return cls(process, int(line))
        except (TimeoutError, ValueError):
            await cls(process, 0).stop()
            raise RuntimeError(f"server {options} did not start") from None

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# --- the data --------------------------------------------------------------------------------


async def rebuild_read_models(pool: asyncpg.Pool, timeout: float = 60.0) -> None:
    """Rebuild every read model once all events are settled: the store only hands out events
    older than every transaction still in flight on the server, other databases' included."""
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


async def hold_seats(pool: asyncpg.Pool, organization_id: int, seats: int) -> int:
    """Hold about `seats` seats of EVENT, spread over the house (every fourth seat), in holds
    of SEATS_PER_HOLD seats, as purchases would, and project them; returns how many."""
    row = await rm.event(pool, organization_id, EVENT)
    assert row is not None, f"{EVENT} is not in the read model"
    types = await rm.ticket_types(pool, event_id=row["id"])
    picked: list[HeldSeat] = []
    index = 0
    for section in sorted(rm.sections_of(row), key=lambda s: (s.display_order, s.id)):
        owner = next((t.id for t in types if section.id in t.section_ids), None)
        if owner is None or section.seating_mode != "seated":
            continue
        for r in section.rows:
            for number in range(r.start, r.end + 1):
                if index % 4 == 0 and len(picked) < seats:
                    picked.append(
                        HeldSeat(
                            section_id=section.id,
                            row=r.identifier,
                            seat_number=number,
                            ticket_type_id=owner,
                        )
                    )
                index += 1
    expires = datetime.now(UTC) + timedelta(hours=6)
    holds = [
        SeatsHeld(
            event_id=row["id"],
            purchase_token=f"bench-{i}",
            seats=chunk,
            counts=dict(Counter(s.ticket_type_id for s in chunk)),
            expires_at=expires,
        )
        for i in range(0, len(picked), SEATS_PER_HOLD)
        if (chunk := picked[i : i + SEATS_PER_HOLD])
    ]
    await append(pool, [PendingAppend(f"event-{row['id']}", ANY_VERSION, holds)], META)
    await rebuild_read_models(pool)
    taken = await rm.taken_seats(pool, row["id"])
    assert len(taken) == len(picked), f"{len(taken)} of {len(picked)} held seats projected"
    return len(picked)


async def prepare(database_url: str, held: int) -> tuple[str, int]:
    """The demo catalog, the holds and the read models; an API key of the demo organization
    whose rate limit the benchmark cannot reach. Returns the token and the seats held."""
    pool = await create_pool(database_url, 4)
    try:
        await migrate(pool)
        await seed_demo(pool, datetime.now(UTC).date())
        await rebuild_read_models(pool)
        organization_id = await organization_id_by_slug(pool, DEMO_ORGANIZATION)
        assert organization_id is not None
        seats = await hold_seats(pool, organization_id, held)
        issued = await create_key(
            pool, organization_id, "bench", rate_limit_per_minute=10_000_000, metadata=META
        )
        return issued.token, seats
    finally:
        await pool.close()


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Result:
    name: str
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    body_bytes: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    database_cpu: float = 0.0
    machine_cpu: float = 0.0

    @property
    def other_cpu(self) -> float:
        """What the rest of the machine used: other people's work skews the figures."""
        return max(0.0, self.machine_cpu - self.server_cpu - self.client_cpu - self.database_cpu)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def merge(self, other: Result) -> Result:
        """Two measurements of one endpoint as one: counts add up, CPU shares are averaged by
        the time each ran."""
        seconds = self.seconds + other.seconds

        def share(mine: float, theirs: float) -> float:
            return (mine * self.seconds + theirs * other.seconds) / seconds if seconds else 0.0

        return Result(
            name=self.name,
            ok=self.ok + other.ok,
            errors=self.errors + other.errors,
            seconds=seconds,
            latencies=self.latencies + other.latencies,
            body_bytes=other.body_bytes or self.body_bytes,
            server_cpu=share(self.server_cpu, other.server_cpu),
            client_cpu=share(self.client_cpu, other.client_cpu),
            database_cpu=share(self.database_cpu, other.database_cpu),
            machine_cpu=share(self.machine_cpu, other.machine_cpu),
        )

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += sum(process.cpu_times()[:2])
    return total


def database_backends() -> list[psutil.Process]:
    """The PostgreSQL backends serving the scratch database (found by their process title)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or ())
        if title.startswith("postgres:") and f" {DATABASE} " in title:
            found.append(process)
    return found


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    result: Result,
    *,
    workers: int,
    seconds: float,
    max_requests: int,
) -> None:
    """`workers` loops of one request at a time each, until `seconds` have passed or
    `max_requests` were sent; a 200 counts (with its latency), anything else is an error."""
    deadline = time.perf_counter() + seconds
    sent = 0

    async def loop() -> None:
        nonlocal sent
        while sent < max_requests and (started := time.perf_counter()) < deadline:
            sent += 1
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
                continue
            if status == 200:
                result.latencies.append(time.perf_counter() - started)
                result.ok += 1
                result.body_bytes = len(body)
            else:
                result.errors[f"HTTP {status}"] += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    result.seconds += time.perf_counter() - start


async def measure(
    name: str, url: str, server: Server, token: str, args: argparse.Namespace
) -> Result:
    """A warm-up (not counted), then the measured phase with the CPU each side used."""
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        bounds = {"workers": args.connections, "max_requests": args.max_requests}
        await drive(session, url, Result(name), seconds=args.warmup, **bounds)
        result = Result(name)
        server_process = [psutil.Process(server.process.pid)]
        backends = database_backends()
        server_before, database_before = cpu_seconds(server_process), cpu_seconds(backends)
        psutil.cpu_percent()
        client_before = time.process_time()
        await drive(session, url, result, seconds=args.seconds, **bounds)
        result.machine_cpu = psutil.cpu_percent() / 100 * (psutil.cpu_count() or 1)
        result.client_cpu = (time.process_time() - client_before) / result.seconds
        result.server_cpu = (cpu_seconds(server_process) - server_before) / result.seconds
        result.database_cpu = (cpu_seconds(backends) - database_before) / result.seconds
    return result


def report(rounds: list[list[Result]], args: argparse.Namespace, seats: int, activity: int) -> None:
    """The table sums the rounds; the verdict takes the median of the per-round ratios, each
    ratio measured against the ceiling of its own round, minutes apart at most."""
    results = [functools.reduce(Result.merge, phase) for phase in zip(*rounds, strict=True)]
    ceiling = results[0].rps
    print(
        f"connections: {args.connections}, {args.rounds} rounds of: warm-up {args.warmup:g} s,"
        f" measured {args.seconds:g} s per endpoint; {psutil.cpu_count()} cores; gateway log"
        f" level {args.log_level}, pool size {args.pool_size}; {seats} seats of {EVENT} held"
    )
    header = (
        f"{'endpoint':34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'ceiling':>8} {'errors':>6}"
        f" {'bytes':>6} {'server':>6} {'client':>6} {'db':>5} {'other':>5} {'µs/req':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:34} {r.rps:8.0f} {r.percentile_ms(0.50):7.1f} {r.percentile_ms(0.99):7.1f}"
            f" {r.rps / ceiling:8.0%} {sum(r.errors.values()):6d} {r.body_bytes:6d}"
            f" {r.server_cpu:6.0%} {r.client_cpu:6.0%} {r.database_cpu:5.0%} {r.other_cpu:5.0%}"
            f" {r.server_cpu / r.rps * 1e6 if r.rps else float('nan'):6.0f}"
        )
    print(
        "CPU in the measured phase, 100% = one core: server process, client (this process),"
        " db (PostgreSQL backends of the scratch database), other (the rest of the machine);"
        " µs/req: server CPU per request"
    )
    for r in results:
        if r.errors:
            print(f"errors on {r.name}: {dict(r.errors)}")
    ratios = [round_[1].rps / round_[0].rps for round_ in rounds if round_[0].rps]
    print("availability / ceiling by round: " + ", ".join(f"{r:.0%}" for r in ratios))
    availability = statistics.median(ratios)
    verdict = "met" if availability >= TARGET else "NOT met"
    print(
        f"target: availability >= {TARGET:.0%} of ceiling (median of the rounds):"
        f" {availability:.0%}, {verdict}; activity rows written by the gateway: {activity}"
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    base = Settings.from_env(data_dir=Path(args.data_dir))
    base.data_dir.mkdir(parents=True, exist_ok=True)
    args.pool_size = args.pool_size or base.db_pool_size
    async with connected(base, nats=False) as live:
        admin = await asyncpg.connect(live.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        settings = replace(live, database_url=live.database_url.rsplit("/", 1)[0] + "/" + DATABASE)
        servers: list[Server] = []
        try:
            token, seats = await prepare(settings.database_url, args.held_seats)
            gateway_options = [
                "--serve=gateway",
                f"--database-url={settings.database_url}",
                f"--pool-size={args.pool_size}",
                f"--log-level={args.log_level}",
            ]
            if args.profile:
                gateway_options.append(f"--profile={Path(args.profile).resolve()}")
            bare = await Server.start("--serve=bare", "--log-level=warning")
            servers.append(bare)
            gateway = await Server.start(*gateway_options, quiet=args.log_level != "warning")
            servers.append(gateway)
            api = f"http://{HOST}:{gateway.port}/api/v1/events/{EVENT}"
            phases = [
                ("bare aiohttp, constant JSON", f"http://{HOST}:{bare.port}/constant", bare),
                (f"GET /events/{EVENT}/availability", f"{api}/availability", gateway),
                (f"GET /events/{EVENT}", api, gateway),
            ]
            # Rounds alternate the ceiling and the endpoints, so a neighbour's burst on a shared
            # machine skews one round rather than one side of the comparison.
            rounds = [
                [await measure(n, u, s, token, args) for n, u, s in phases]
                for _ in range(args.rounds)
            ]
            for server in servers:
                await server.stop()
            scratch = await asyncpg.connect(settings.database_url)
            activity = await scratch.fetchval("SELECT count(*) FROM api_activity")
            await scratch.close()
        finally:
            for server in servers:
                await server.stop()
            await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            await admin.close()
    report(rounds, args, seats, activity)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="measured, per endpoint")
    parser.add_argument("--rounds", type=int, default=3, help="of all endpoints, alternating")
    parser.add_argument("--warmup", type=float, default=1.5, help="not counted, per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per phase")
    parser.add_argument("--held-seats", type=int, default=200)
    parser.add_argument("--pool-size", type=int, default=0, help="default: LINJERUM_DB_POOL_SIZE")
    parser.add_argument("--log-level", default="warning", help="the gateway's structlog level")
    parser.add_argument("--profile", help="write the gateway's cProfile stats to this file")
    parser.add_argument("--data-dir", default=".linjerum-bench")
    parser.add_argument("--serve", choices=("gateway", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    asyncio.run(serve(arguments) if arguments.serve else main(arguments))
