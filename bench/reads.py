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
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import psutil
from aiohttp import web
from harness.load import Call, Phase, drive, measure
from harness.processes import HOST, Component, serving, stop_signal, this_script, tidy_logs
from harness.report import Cpu, Step, mean_cpu, percentile_ms, verdict
from harness.setup import META, bench_settings, rebuild_read_models, unlimited_keys

from domain import streams
from domain.inventory.events import HeldSeat, SeatsHeld
from infra.db import create_pool, migrate
from infra.embedded import free_port
from infra.eventstore import ANY_VERSION, PendingAppend, append
from infra.logging import configure_logging
from infra.scratch import database_name
from infra.supervise import stop_tasks
from projections import availability, catalog
from services.api.activity import ActivityLog
from services.api.gateway import create_app
from services.dev.demo_catalog import DEMO_ORGANIZATION
from services.dev.seed_demo import seed_demo
from services.usecases.catalog_commands import organization_id_by_slug
from services.usecases.purchases import Purchases
from services.usecases.ticket_documents import Documents

EVENT = "hamlet-2026"
TARGET = 0.60
SEATS_PER_HOLD = 4
SENDER = "bench@example.com"
CONSTANT_BODY = b'{"status":"ok","service":"linjerum","version":1}'
SERVING = "serving on port"


# --- the server processes -----------------------------------------------------------------------


async def constant_json(_: web.Request) -> web.Response:
    """The ceiling: no database, no middleware, a body encoded once."""
    return web.Response(body=CONSTANT_BODY, content_type="application/json")


def bare_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/constant", constant_json)
    return app


async def serve(args: argparse.Namespace) -> None:
    """One server on `--port` of 127.0.0.1, until SIGTERM or SIGINT. The gateway is wired as
    services/runtime.py `_serve_http` does, without the seat offers of other gateways (NATS)."""
    configure_logging(args.log_level)
    stop = stop_signal()
    async with contextlib.AsyncExitStack() as stack:
        if args.serve == "gateway":
            pool = await create_pool(args.database_url, args.pool_size)
            stack.push_async_callback(pool.close)
            activity = ActivityLog(pool)
            stack.push_async_callback(activity.close)
            writer = asyncio.create_task(activity.run())
            stack.push_async_callback(stop_tasks, [writer])
            sales = Purchases(pool, None)  # read endpoints only: no payment provider
            link = f"http://{HOST}/api/v1/tickets/attendee/{{token}}"
            app = create_app(pool, activity, sales, Documents(pool, sales.catalog, SENDER, link))
        else:
            app = bare_app()
        await stack.enter_async_context(serving(app, args.port, f"{SERVING} {args.port}"))
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        await stop.wait()
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)


async def start_server(name: str, logs: Path, *options: str) -> tuple[Component, int]:
    """This script again, serving on a port of its own; returns it and the port."""
    port = free_port()
    argv = this_script(f"--serve={name}", f"--port={port}", *options)
    return await Component.start(name, argv, dict(os.environ), logs, ready=SERVING), port


# --- the data --------------------------------------------------------------------------------


async def hold_seats(pool: asyncpg.Pool, organization_id: int, seats: int) -> int:
    """Hold about `seats` seats of EVENT, spread over the house (every fourth seat), in holds
    of SEATS_PER_HOLD seats, as purchases would, and project them; returns how many."""
    row = await catalog.event(pool, organization_id, EVENT)
    assert row is not None, f"{EVENT} is not in the read model"
    types = await catalog.ticket_types(pool, event_id=row["id"])
    picked: list[HeldSeat] = []
    index = 0
    for section in sorted(catalog.sections_of(row), key=lambda s: (s.display_order, s.id)):
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
    await append(pool, [PendingAppend(streams.event(row["id"]), ANY_VERSION, holds)], META)
    await rebuild_read_models(pool)
    taken = await availability.taken_seats(pool, row["id"])
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
        (token,) = await unlimited_keys(pool, organization_id)
        return token, seats
    finally:
        await pool.close()


# --- the load generator ----------------------------------------------------------------------


async def measured(
    name: str, url: str, server: Component, token: str, database: str, args: argparse.Namespace
) -> Phase:
    """A warm-up (not counted), then the measured phase with the CPU each side used."""
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Authorization": f"Bearer {token}"}
    calls = [Call("GET", url)] * args.max_requests
    bounds = {"connections": args.connections, "calls": calls}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        await drive(session, Phase(Step(name)), seconds=args.warmup, **bounds)
        cpu = Cpu({"server": server.pid}, database)
        return await measure(session, name, cpu=cpu, seconds=args.seconds, **bounds)


@dataclass
class Endpoint:
    """One endpoint's phases over the rounds, as one: counts add up, CPU shares are averaged
    by the time each phase ran."""

    phases: Sequence[Phase]

    @property
    def name(self) -> str:
        return self.phases[0].step.name

    @property
    def rps(self) -> float:
        answered = sum(len(p.step.latencies) for p in self.phases)
        seconds = sum(p.seconds for p in self.phases)
        return answered / seconds if seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile_ms([s for p in self.phases for s in p.step.latencies], q)

    @property
    def errors(self) -> Counter[str]:
        return sum((p.step.errors for p in self.phases), Counter())

    @property
    def body_bytes(self) -> int:
        return next((p.body_bytes for p in reversed(self.phases) if p.body_bytes), 0)

    def cpu(self, name: str) -> float:
        return mean_cpu([p.cpu for p in self.phases if p.cpu is not None], name)


def report(rounds: list[list[Phase]], args: argparse.Namespace, seats: int, activity: int) -> None:
    """The table sums the rounds; the verdict takes the median of the per-round ratios, each
    ratio measured against the ceiling of its own round, minutes apart at most."""
    endpoints = [Endpoint(phases) for phases in zip(*rounds, strict=True)]
    ceiling = endpoints[0].rps
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
    for e in endpoints:
        server, client, db = e.cpu("server"), e.cpu("load generator"), e.cpu("database")
        other = max(0.0, e.cpu("machine") - server - client - db)
        print(
            f"{e.name:34} {e.rps:8.0f} {e.percentile_ms(0.50):7.1f} {e.percentile_ms(0.99):7.1f}"
            f" {e.rps / ceiling:8.0%} {e.errors.total():6d} {e.body_bytes:6d}"
            f" {server:6.0%} {client:6.0%} {db:5.0%} {other:5.0%}"
            f" {server / e.rps * 1e6 if e.rps else float('nan'):6.0f}"
        )
    print(
        "CPU in the measured phase, 100% = one core: server process, client (this process),"
        " db (PostgreSQL backends of the scratch database), other (the rest of the machine);"
        " µs/req: server CPU per request"
    )
    for e in endpoints:
        if e.errors:
            print(f"errors on {e.name}: {dict(e.errors)}")
    ratios = [round_[1].rate / round_[0].rate for round_ in rounds if round_[0].rate]
    print("availability / ceiling by round: " + ", ".join(f"{r:.0%}" for r in ratios))
    share = statistics.median(ratios)
    print(
        f"target: availability >= {TARGET:.0%} of ceiling (median of the rounds):"
        f" {share:.0%}, {verdict(share >= TARGET)}; activity rows written by the gateway:"
        f" {activity}"
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    async with bench_settings(args.data_dir, "reads", nats=False) as settings:
        args.pool_size = args.pool_size or settings.db_pool_size
        database = database_name(settings)
        logs = Path(args.data_dir).resolve() / f"reads-{database}"
        token, seats = await prepare(settings.database_url, args.held_seats)
        gateway_options = [
            f"--database-url={settings.database_url}",
            f"--pool-size={args.pool_size}",
            f"--log-level={args.log_level}",
        ]
        if args.profile:
            gateway_options.append(f"--profile={Path(args.profile).resolve()}")
        servers: list[Component] = []
        try:
            bare, bare_port = await start_server("bare", logs, "--log-level=warning")
            servers.append(bare)
            gateway, gateway_port = await start_server("gateway", logs, *gateway_options)
            servers.append(gateway)
            api = f"http://{HOST}:{gateway_port}/api/v1/events/{EVENT}"
            phases = [
                ("bare aiohttp, constant JSON", f"http://{HOST}:{bare_port}/constant", bare),
                (f"GET /events/{EVENT}/availability", f"{api}/availability", gateway),
                (f"GET /events/{EVENT}", api, gateway),
            ]
            # Rounds alternate the ceiling and the endpoints, so a neighbour's burst on a shared
            # machine skews one round rather than one side of the comparison.
            rounds = [
                [await measured(n, u, s, token, database, args) for n, u, s in phases]
                for _ in range(args.rounds)
            ]
        finally:
            for server in servers:
                await server.stop()
        conn = await asyncpg.connect(settings.database_url)
        activity = await conn.fetchval("SELECT count(*) FROM api_activity")
        await conn.close()
    report(rounds, args, seats, activity)
    tidy_logs(logs, servers, keep=False, whose="the servers'")


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
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    asyncio.run(serve(arguments) if arguments.serve else main(arguments))
