"""Ticket delivery and gate benchmark: ticket PDFs per second (single-ticket and 20-ticket
purchases) and scans per second, at 64 concurrent connections over 16,000 paid tickets, with
p50/p99. Targets: at least 100 single-ticket PDFs/s, a purchase's 20-ticket PDF in at most
1 s at the median, and at least 1,000 scans/s.

    make bench                                   # embedded servers under .linjerum-bench/
    DATABASE_URL=... NATS_URL=... .venv/bin/python bench/tickets.py --seconds 10

The tickets are bought in the set-up, in process: 800 free purchases of 20 seats of one event
(a free purchase is paid at once and its tickets issued), plus one purchase for the warm-up;
then every read model is rebuilt. The gateway runs as `linjerum gateway` in a process of its
own; this process is the load generator. Every PDF is of tickets not rendered before (single
tickets from one half of the purchases, whole purchases from the other), so the gateway's cache
of rendered documents never helps. The whole-purchase PDFs run in --rounds rounds, each on
purchases of its own and followed by its ceiling: the same requests again, answered from that
cache (everything a download costs but the rendering); the verdict is on the median of the
rounds. PDFs have a bucket of 10 per key per minute, so the requests are spread over enough
keys that none is refused. Every ticket is scanned once, in random order. The database and
the NATS stream are the run's own and removed at the end. Traffic goes to 127.0.0.1 only;
every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import psutil
from harness.load import Call, Check, Phase, drive, measure
from harness.processes import (
    HOST,
    Component,
    Profiler,
    service_env,
    settled,
    start_gateway,
    tidy_logs,
)
from harness.report import Cpu, Step, print_steps, verdict
from harness.setup import (
    META,
    BenchEvent,
    bench_settings,
    create_event,
    rebuild_read_models,
    unlimited_keys,
)

from domain.purchasing import PurchaseRequest
from infra.db import create_pool, migrate
from infra.embedded import free_port
from infra.logging import configure_logging
from infra.scratch import database_name
from services.dev.sample_event import SLUG
from services.usecases.purchases import Purchases

PDFS_TARGET = 100.0
PURCHASE_PDF_P50_TARGET_MS = 1000.0
SCANS_TARGET = 1000.0
PDFS_PER_KEY = 10  # the ticket_pdf bucket of services/api/access.py, per key and minute
SEATS_PER_ROW = 50


@dataclass(frozen=True)
class Bought:
    """A paid purchase and its tickets as (id, code)."""

    token: str
    tickets: list[tuple[int, str]]


@dataclass
class Setup:
    event: BenchEvent
    purchases: list[Bought]
    warm_up: Bought
    scan_key: str
    pdf_keys: list[str]


async def buy(
    sales: Purchases, event: BenchEvent, count: int, size: int, concurrency: int
) -> list[Bought]:
    """`count` free purchases of `size` seats each, through Purchases.place (as the gateway
    would, minus HTTP), `concurrency` at a time."""
    type_id = event.ticket_type_id
    bought: list[Bought] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            request = msgspec.convert(
                {
                    "event_slug": SLUG,
                    "quantities": {type_id: size},
                    "buyer": {"name": f"Guest {index}", "email": f"guest{index}@example.com"},
                },
                PurchaseRequest,
            )
            state = await sales.place(request, event.organization_id, None, META)
            assert state.status == "paid", state.status
            bought.append(
                Bought(state.opened.token, [(t.id, t.code) for t in state.opened.tickets])
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return bought


async def prepare(database_url: str, args: argparse.Namespace) -> Setup:
    """The event, the paid tickets, the read models and the API keys."""
    pool = await create_pool(database_url, 20)
    try:
        await migrate(pool)
        tickets = (args.purchases + 1) * args.tickets_per_purchase
        event = await create_event(
            pool,
            rows=math.ceil(tickets / SEATS_PER_ROW),
            seats_per_row=SEATS_PER_ROW,
            price_cents=0,
            stripe_account=None,
        )
        sales = Purchases(pool, None)
        try:
            started = time.perf_counter()
            bought = await buy(sales, event, args.purchases + 1, args.tickets_per_purchase, 16)
            print(
                f"set-up: {len(bought)} purchases of {args.tickets_per_purchase} tickets placed"
                f" in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        finally:
            await sales.close()
        await rebuild_read_models(pool)
        half = args.purchases // 2
        singles = min(args.max_pdfs, (args.purchases - half) * args.tickets_per_purchase)
        pdfs = singles + 2 * half  # each purchase PDF fresh, then again for the ceiling
        # Enough keys that no PDF bucket fills, whatever rounding each phase's share needs,
        # and the last one for the warm-up alone.
        count = math.ceil(pdfs / PDFS_PER_KEY) + 3
        keys = await unlimited_keys(pool, event.organization_id, count)
        return Setup(event, bought[:-1], bought[-1], keys[0], keys[1:])
    finally:
        await pool.close()


# --- the load generator --------------------------------------------------------------------------


def is_pdf(body: bytes) -> str | None:
    return None if body.startswith(b"%PDF") else "not a PDF"


def admitted(body: bytes) -> str | None:
    """A first scan must admit: anything else is an error, named by its reason."""
    verdict_ = msgspec.json.decode(body)
    return None if verdict_.get("valid") else f"refused: {verdict_.get('reason')}"


def call(target: Target, method: str, path: str, token: str) -> Call:
    return Call(method, target.base + path, {"Authorization": f"Bearer {token}"})


@dataclass(frozen=True)
class PdfCalls:
    """Single-ticket PDFs of one half of the purchases; whole-purchase PDFs of the other half,
    in rounds of their own, each round twice (fresh, then rendered before: the ceiling)."""

    single: list[Call]
    rounds: list[tuple[list[Call], list[Call]]]


def pdf_calls(target: Target, setup: Setup) -> PdfCalls:
    """The PDF requests, each key used PDFS_PER_KEY times at most."""
    keys = iter(setup.pdf_keys)
    key = ""

    def next_key(i: int) -> str:
        nonlocal key
        if i % PDFS_PER_KEY == 0:
            key = next(keys)
        return key

    half = len(setup.purchases) // 2
    singles = [(p.token, ticket_id) for p in setup.purchases[half:] for ticket_id, _ in p.tickets][
        : target.args.max_pdfs
    ]
    single = [
        call(target, "GET", f"/api/v1/purchases/{token}/tickets/{ticket_id}/pdf", next_key(i))
        for i, (token, ticket_id) in enumerate(singles)
    ]
    used = len(single) + PDFS_PER_KEY - len(single) % PDFS_PER_KEY
    purchases = setup.purchases[:half]
    size = math.ceil(len(purchases) / target.args.rounds)
    rounds = []
    for first in range(0, len(purchases), size):
        twice = []
        for _ in range(2):
            chosen = purchases[first : first + size]
            twice.append(
                [
                    call(target, "GET", f"/api/v1/purchases/{p.token}/tickets/pdf", next_key(i))
                    for i, p in enumerate(chosen, used)
                ]
            )
            used += len(chosen)
        rounds.append((twice[0], twice[1]))
    return PdfCalls(single, rounds)


def scan_calls(target: Target, setup: Setup) -> list[Call]:
    """Every ticket scanned once, in random order."""
    codes = [code for p in setup.purchases for _, code in p.tickets]
    random.Random(target.args.seed).shuffle(codes)
    return [call(target, "POST", f"/api/v1/tickets/{c}/scan", setup.scan_key) for c in codes]


async def warm_up(target: Target, setup: Setup) -> None:
    """Fonts loaded, caches filled and connections open, on the warm-up purchase only."""
    key = setup.pdf_keys[-1]
    token = setup.warm_up.token
    calls = [call(target, "GET", f"/api/v1/purchases/{token}/tickets/pdf", key)]
    calls += [
        call(target, "GET", f"/api/v1/purchases/{token}/tickets/{ticket_id}/pdf", key)
        for ticket_id, _ in setup.warm_up.tickets[: PDFS_PER_KEY - 1]
    ]
    calls += [
        call(target, "POST", f"/api/v1/tickets/{code}/scan", setup.scan_key)
        for _, code in setup.warm_up.tickets
    ]
    phase = Phase(Step("warm-up"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await drive(session, phase, calls, connections=8, seconds=60)
    if phase.step.errors:
        raise RuntimeError(f"warm-up failed: {dict(phase.step.errors)}")


@dataclass(frozen=True)
class Target:
    """The gateway under load and what measuring it needs."""

    gateway: Component
    base: str
    database: str
    args: argparse.Namespace


async def measured(
    target: Target, name: str, short: str, calls: list[Call], check: Check, seconds: float
) -> Phase:
    """One phase over fresh connections, with the CPU each side used (and, with --py-spy, the
    gateway's stacks in `tickets-<short>.txt`)."""
    args = target.args
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        profiler = None
        if args.py_spy:
            path = Path(args.py_spy) / f"tickets-{short}.txt"
            profiler = await Profiler.attach(target.gateway.pid, path)
        cpu = Cpu({"gateway": target.gateway.pid, **render_workers(target)}, target.database)
        try:
            return await measure(
                session,
                name,
                calls,
                cpu,
                connections=args.connections,
                seconds=seconds,
                check=check,
            )
        finally:
            if profiler is not None:
                await profiler.stop()


@dataclass(frozen=True)
class Phases:
    """The measured phases: single-ticket PDFs, each round's purchase PDFs fresh and again (its
    ceiling), and the scans."""

    single: Phase
    rounds: list[tuple[Phase, Phase]]
    scans: Phase

    def all(self) -> list[Phase]:
        return [self.single, *(p for pair in self.rounds for p in pair), self.scans]


def render_workers(target: Target) -> dict[str, int]:
    """The gateway's PDF render worker processes (the children of its fork server), so their
    CPU is counted apart from the gateway's."""
    children = psutil.Process(target.gateway.pid).children()
    servers = [c for c in children if "multiprocessing.forkserver" in " ".join(c.cmdline())]
    workers = [worker for server in servers for worker in server.children()]
    return {f"render worker {n}": c.pid for n, c in enumerate(workers, 1)}


def report(args: argparse.Namespace, setup: Setup, phases: Phases) -> None:
    tickets = sum(len(p.tickets) for p in setup.purchases)
    print(
        f"tickets: {tickets} paid tickets in {len(setup.purchases)} purchases of"
        f" {args.tickets_per_purchase}, {args.connections} connections, PDF phases at most"
        f" {args.seconds:g} s, scans at most {args.scan_seconds:g} s; gateway pool"
        f" {args.pool_size}, PDF workers {args.pdf_workers or 'default'}, log level"
        f" {args.log_level}, {psutil.cpu_count()} cores"
    )
    print_steps([(phase.step, phase.seconds) for phase in phases.all()])
    print(
        "(count: requests answered 200 with a PDF, or a scan that admitted; per s over the phase)"
    )
    for phase in phases.all():
        assert phase.cpu is not None
        print(
            f"{phase.step.name}: {phase.seconds:.2f} s, {phase.body_bytes} bytes per response,"
            f" {phase.not_sent} not sent (time bound), CPU per request: gateway"
            f" {phase.cpu_us_per_request('gateway'):.0f} µs, render workers"
            f" {_workers_us(phase):.0f} µs; {phase.cpu.line()}"
        )
    fresh = [round_[0].step.percentile_ms(0.5) for round_ in phases.rounds]
    again = [round_[1].step.percentile_ms(0.5) for round_ in phases.rounds]
    errors = any(p.step.errors for pair in phases.rounds for p in pair)
    print(
        f"purchase PDFs ({args.tickets_per_purchase} tickets, {args.connections} connections),"
        f" p50 per round: rendered {_ms(fresh)} vs rendered before (ceiling) {_ms(again)};"
        f" medians {statistics.median(fresh):.0f} vs {statistics.median(again):.0f} ms"
    )
    single, scans = phases.single, phases.scans
    print(
        f"targets: single-ticket PDFs/s >= {PDFS_TARGET:g}: {single.rate:.0f},"
        f" {verdict(single.rate >= PDFS_TARGET and not single.step.errors)};"
        f" purchase PDF p50 <= {PURCHASE_PDF_P50_TARGET_MS:g} ms (median of rounds):"
        f" {statistics.median(fresh):.0f},"
        f" {verdict(statistics.median(fresh) <= PURCHASE_PDF_P50_TARGET_MS and not errors)};"
        f" scans/s >= {SCANS_TARGET:g}: {scans.rate:.0f},"
        f" {verdict(scans.rate >= SCANS_TARGET and not scans.step.errors)}"
    )


def _workers_us(phase: Phase) -> float:
    assert phase.cpu is not None
    used = sum(u for name, u in phase.cpu.used.items() if name.startswith("render worker"))
    return used / phase.rate * 1e6 if phase.rate else float("nan")


def _ms(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values) + " ms"


async def run_phases(target: Target, setup: Setup) -> Phases:
    """Single-ticket PDFs, then each round of purchase PDFs followed by its ceiling, then scans."""
    args = target.args
    calls = pdf_calls(target, setup)
    single = await measured(
        target,
        "GET /purchases/{token}/tickets/{id}/pdf",
        "ticket-pdf",
        calls.single,
        is_pdf,
        args.seconds,
    )
    whole = f"GET /purchases/{{token}}/tickets/pdf ({args.tickets_per_purchase} tickets)"
    rounds = []
    for number, (fresh, again) in enumerate(calls.rounds, 1):
        rounds.append(
            (
                await measured(
                    target,
                    f"{whole}, round {number}",
                    f"purchase-pdf-{number}",
                    fresh,
                    is_pdf,
                    args.seconds,
                ),
                await measured(
                    target,
                    f"  the same again (ceiling), round {number}",
                    f"purchase-pdf-again-{number}",
                    again,
                    is_pdf,
                    args.seconds,
                ),
            )
        )
    scans = await measured(
        target,
        "POST /tickets/{code}/scan",
        "scan",
        scan_calls(target, setup),
        admitted,
        args.scan_seconds,
    )
    return Phases(single, rounds, scans)


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    async with bench_settings(args.data_dir, "tickets") as settings:
        setup = await prepare(settings.database_url, args)
        logs = Path(args.data_dir).resolve() / f"tickets-{database_name(settings)}"
        env = service_env(settings, log_level=args.log_level, pool_size=args.pool_size)
        env["STRIPE_SIM_PORT"] = str(free_port())  # never the default port of a `linjerum run`
        if args.pdf_workers:
            env["LINJERUM_PDF_WORKERS"] = str(args.pdf_workers)
        port = free_port()
        gateway = await start_gateway("gateway", port, env, logs)
        target = Target(gateway, f"http://{HOST}:{port}", database_name(settings), args)
        try:
            await warm_up(target, setup)
            await settled([gateway])
            phases = await run_phases(target, setup)
        finally:
            await gateway.stop()
    report(args, setup, phases)
    tidy_logs(logs, [gateway], keep=args.keep_logs, whose="the gateway's")
    if args.py_spy:
        print(f"gateway profiles (py-spy collapsed stacks): {args.py_spy}/tickets-*.txt")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--purchases", type=int, default=800)
    parser.add_argument("--tickets-per-purchase", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="per PDF phase, at most")
    parser.add_argument("--rounds", type=int, default=3, help="of purchase PDFs and ceiling")
    parser.add_argument("--pdf-workers", type=int, help="the gateway's LINJERUM_PDF_WORKERS")
    parser.add_argument("--scan-seconds", type=float, default=60.0, help="scans, at most")
    parser.add_argument("--max-pdfs", type=int, default=5000, help="single-ticket PDFs, at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pool-size", type=int, default=10, help="the gateway's DB pool")
    parser.add_argument("--log-level", default="info", help="the gateway's (info: as deployed)")
    parser.add_argument("--py-spy", help="a folder for the gateway's py-spy collapsed stacks")
    parser.add_argument("--keep-logs", action="store_true", help="keep the gateway's logs")
    parser.add_argument("--data-dir", default=".linjerum-bench")
    args = parser.parse_args()
    if args.purchases < 2 * args.rounds or not 1 <= args.tickets_per_purchase <= 20:
        parser.error("need at least 2 purchases per round, of 1 to 20 tickets")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
