"""Paid orders benchmark: the leading open-source peer's own workload (pretix's), run against
`linjerum run` started as a user starts it. 32 clients each loop: POST /purchases for one ticket
with the seat left to the sales desk, pay the PaymentIntent at the Stripe simulator (which sends
the webhook), poll GET /purchases/:token until `paid_at` is set; then every issued ticket is
scanned once at 32 connections. Prints paid orders/s, p50/p99 of each step and of the whole
order, scans/s and refused scans, how far each read model was behind the event store, and the
oversold seats counted in the event store (must be 0); beside the single-row INSERT ceiling of
the same database measured in the same run.

    .venv/bin/python bench/paid_orders.py [--orders 2000 --seconds 60 --clients 32]

The database and NATS stream are the run's own and removed at the end. Traffic goes to
127.0.0.1 only; the orders are bounded by --orders and --seconds, the scans by the tickets
issued and --scan-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from harness.lag import LagSampler
from harness.load import Call, LoadProcesses, Share, insert_ceiling, measure
from harness.processes import (
    HOST,
    READY,
    Component,
    linjerum,
    process_tree,
    service_env,
    settled,
    tidy_logs,
    wait_until_served,
)
from harness.report import Cpu, Step, print_steps, verdict
from harness.rounds import Figure, add_arguments, record, run_rounds, wanted
from harness.served import served_requests
from harness.setup import (
    BenchEvent,
    bench_settings,
    create_event,
    rebuild_read_models,
    unlimited_keys,
)
from onsale_buyers import stored_sales
from tickets import admitted

from infra.db import create_pool, migrate
from infra.embedded import free_port
from infra.logging import configure_logging
from infra.scratch import database_name
from infra.settings import Settings
from services.dev.sample_event import SLUG

PEER_ORDERS_PER_S = 18.9  # pretix 2026.8.0 on the same 2-core machine (issue 14)
ORDERS_TARGET = 20 * PEER_ORDERS_PER_S
CREATE_P99_TARGET_MS = 100.0
ORDER_P99_TARGET_MS = 200.0
SCANS_TARGET = 2000.0

# What `--rounds` summarizes, with issue 14's targets.
FIGURES = (
    Figure("orders_per_s", "paid orders", "/s", target=ORDERS_TARGET, at_least=True),
    Figure("create_p99", "POST /purchases p99", target=CREATE_P99_TARGET_MS),
    Figure("seen_p99", "paid at the simulator -> paid_at seen p99"),
    Figure("order_p99", "whole order p99", target=ORDER_P99_TARGET_MS),
    Figure("scans_per_s", "scans", "/s", target=SCANS_TARGET, at_least=True),
    Figure("scans_refused", "scans refused", "scans", target=0.0),
    Figure("read_model_p99", "read models' worst lag p99"),
    Figure("transactions_per_order", "database transactions per order", "each"),
    Figure("oversold", "oversold", "seats", target=0.0),
)

CREATE, PAY, SEEN, ORDER = (
    "POST /purchases (1 ticket, seat by the desk)",
    "POST /_sim/payment_intents/{id}/succeed",
    "paid at the simulator -> paid_at seen",
    "whole order: create -> paid_at seen",
)


@dataclass
class Orders:
    """What the clients of one load process saw; times are seconds since the load began."""

    steps: dict[str, Step] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: list[str] = field(default_factory=list)
    paid_at: list[float] = field(default_factory=list)
    polls: int = 0

    def step(self, name: str) -> Step:
        return self.steps.setdefault(name, Step(name))

    @classmethod
    def merged(cls, shares: list[Orders]) -> Orders:
        orders = cls()
        for share in shares:
            for name, theirs in share.steps.items():
                orders.step(name).latencies += theirs.latencies
                orders.step(name).errors.update(theirs.errors)
            orders.outcomes.update(share.outcomes)
            orders.codes += share.codes
            orders.paid_at += share.paid_at
            orders.polls += share.polls
        return orders


class Clients:
    """The peer's clients: each places, pays and waits for one order at a time."""

    def __init__(self, args: argparse.Namespace, event: BenchEvent, base: str, sim: str, key: str):
        self.args = args
        self.event = event
        self.api = f"{base}/api/v1"
        self.simulator = sim
        self.headers = {"Authorization": f"Bearer {key}"}
        self.orders = Orders()
        self._next = 0
        self._started = 0.0

    async def _call(
        self, session: aiohttp.ClientSession, step: str, method: str, url: str, body: Any = None
    ) -> tuple[int, Any]:
        try:
            async with session.request(method, url, json=body) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.orders.step(step).errors[type(exc).__name__] += 1
            return 0, None

    async def _order(self, api: aiohttp.ClientSession, sim: aiohttp.ClientSession, n: int) -> bool:
        """One order from creation to `paid_at`; False once the event is sold out."""
        orders = self.orders
        body = {
            "event_slug": SLUG,
            "quantities": {str(self.event.ticket_type_id): 1},
            "buyer": {"name": f"Client {n}", "email": f"client{n}@example.com"},
        }
        began = time.perf_counter()
        status, created = await self._call(api, CREATE, "POST", f"{self.api}/purchases", body)
        created_at = time.perf_counter()
        if status == 0:
            return True
        if status != 201:
            error = created.get("error") if isinstance(created, dict) else None
            orders.step(CREATE).errors[f"{status} {error}"] += 1
            return error != "insufficient_availability"
        orders.step(CREATE).latencies.append(created_at - began)
        purchase = created["purchase"]
        intent = created["payment"]["stripe_payment_intent_id"]
        url = f"{self.simulator}/_sim/payment_intents/{intent}/succeed"
        status, _ = await self._call(sim, PAY, "POST", url)
        confirmed = time.perf_counter()
        if status != 200:
            orders.step(PAY).errors[f"HTTP {status}"] += 1
            return True
        orders.step(PAY).latencies.append(confirmed - created_at)
        for _ in range(self.args.max_polls):
            orders.polls += 1
            url = f"{self.api}/purchases/{purchase['token']}"
            status, polled = await self._call(api, SEEN, "GET", url)
            if status == 200 and polled["purchase"]["paid_at"]:
                seen = time.perf_counter()
                orders.step(SEEN).latencies.append(seen - confirmed)
                orders.step(ORDER).latencies.append(seen - began)
                orders.paid_at.append(seen - self._started)
                orders.codes += [t["ticket_code"] for t in purchase["tickets"]]
                return True
            await asyncio.sleep(self.args.poll_interval)
        orders.outcomes["not seen paid within --max-polls"] += 1
        return True

    async def run(self, share: Share) -> Orders:
        self._next, self._started = share.index, share.started
        deadline = share.started + self.args.seconds
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=self.args.clients)
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=timeout, headers=self.headers
            ) as api,
            aiohttp.ClientSession(timeout=timeout) as sim,
        ):

            async def client() -> None:
                while self._next < self.args.orders and time.perf_counter() < deadline:
                    n, self._next = self._next, self._next + share.of
                    if not await self._order(api, sim, n):
                        self.orders.outcomes["sold out"] += 1
                        return

            await asyncio.sleep(max(0.0, share.started - time.perf_counter()))
            await asyncio.gather(
                *(client() for _ in range(share.index, self.args.clients, share.of))
            )
        return self.orders


@dataclass
class Setup:
    event: BenchEvent
    key: str
    ceiling: float


async def prepare(settings: Settings, args: argparse.Namespace) -> Setup:
    """Schema, an event with a seat for every order, its read models, an API key the clients
    cannot exhaust, and the INSERT ceiling of this database while nothing else runs."""
    pool = await create_pool(settings.database_url, args.ceiling_connections + 2)
    try:
        await migrate(pool)
        event = await create_event(
            pool,
            rows=math.ceil(args.orders / args.seats_per_row),
            seats_per_row=args.seats_per_row,
            price_cents=35000,
            stripe_account="acct_sim_bench",
        )
        await rebuild_read_models(pool)
        (key,) = await unlimited_keys(pool, event.organization_id)
        ceiling = await insert_ceiling(pool, args.ceiling_seconds, args.ceiling_connections)
        return Setup(event, key, ceiling)
    finally:
        await pool.close()


async def committed(database_url: str) -> int:
    """Transactions committed in the run's database so far (each statement outside a
    transaction is one): how many round trips that wake PostgreSQL an order costs. Backends
    report their counts about once a second, so the figure is good to a second's worth."""
    pool = await create_pool(database_url, 1)
    try:
        count: int = await pool.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await pool.close()
    return count


MAIL_WAIT_SECONDS = 180.0

_MAILED = """
SELECT count(*) FILTER (WHERE kind = 'confirmation' AND sent_at IS NOT NULL) AS sent,
       max(sent_at) FILTER (WHERE kind = 'confirmation') AS last_sent,
       (SELECT max(recorded_at) FROM events WHERE type = 'PurchasePaid') AS last_paid
FROM mail_outbox
"""


async def mailed(database_url: str, paid: int) -> str:
    """The confirmation e-mails (PDF attached), which yield the cores to the sale and catch up
    after it: waits (bounded) until every paid order's is sent, and says how long after the
    last payment the last one went out."""
    pool = await create_pool(database_url, 1)
    try:
        deadline = time.monotonic() + MAIL_WAIT_SECONDS
        while True:
            row = await pool.fetchrow(_MAILED)
            if row["sent"] >= paid or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await pool.close()
    behind = (
        (row["last_sent"] - row["last_paid"]).total_seconds()
        if row["last_sent"] and row["last_paid"]
        else float("nan")
    )
    return (
        "confirmation e-mails (PDF attached, sent after the rush by a process at lower priority):"
        f" {row['sent']} of {paid} sent, the last {behind:.1f} s after the last payment"
    )


async def scans(base: str, key: str, codes: list[str], cpu: Cpu, args: argparse.Namespace) -> Any:
    """Every issued ticket scanned once, right after the last order was seen paid."""
    headers = {"Authorization": f"Bearer {key}"}
    calls = [Call("POST", f"{base}/api/v1/tickets/{code}/scan", headers) for code in codes]
    connector = aiohttp.TCPConnector(limit=args.clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return await measure(
            session,
            "POST /tickets/{code}/scan",
            calls,
            cpu,
            connections=args.clients,
            seconds=args.scan_seconds,
            check=admitted,
        )


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    async with bench_settings(args.data_dir, "paid_orders") as settings:
        setup = await prepare(settings, args)
        logs = Path(args.data_dir).resolve() / f"paid-orders-{database_name(settings)}"
        env = service_env(settings, log_level=args.log_level, pool_size=args.pool_size)
        port, sim_port = free_port(), free_port()
        env["STRIPE_SIM_PORT"] = str(sim_port)
        base = f"http://{HOST}:{port}"
        command = linjerum(logs / "data", "run", "--no-seed", "--host", HOST, "--port", str(port))
        run = await Component.start("linjerum-run", command, env, logs, ready=READY)
        try:
            clients = Clients(args, setup.event, base, f"http://{HOST}:{sim_port}", setup.key)
            async with aiohttp.ClientSession(headers=clients.headers) as session:
                await wait_until_served(session, f"{clients.api}/events/{SLUG}", 60)
            await settled([run])
            load = await LoadProcesses.start(args.load_processes)
            cpu = Cpu(process_tree([run]), database_name(settings))
            lag = LagSampler(settings.database_url)
            await lag.start()
            commits = -await committed(settings.database_url)
            cpu.start()
            shares, load_cpu = await load.run(clients.run)
            cpu.stop()
            commits += await committed(settings.database_url)
            cpu.add("load generator", load_cpu)
            orders = Orders.merged(shares)
            scan_cpu = Cpu(process_tree([run]), database_name(settings))
            scanned = await scans(base, setup.key, orders.codes, scan_cpu, args)
            lags = await lag.stop()
            mail = await mailed(settings.database_url, len(orders.paid_at))
        finally:
            await run.stop()
        pool = await create_pool(settings.database_url, 2)
        try:
            stored = await stored_sales(pool, setup.event.event_id)
            served = await served_requests(pool)
        finally:
            await pool.close()
    oversold = stored.oversold(setup.event.capacity)
    report(args, setup, orders, scanned, cpu, oversold)
    per_order = commits / max(len(orders.paid_at), 1)
    print(
        f"database transactions during the orders: {commits}, {per_order:.1f} per paid order"
        " (every process's; a statement outside a transaction is one)"
    )
    print(mail)
    print(served)
    print(
        "read models behind the event store (append's commit -> row visible, sampled every 10 ms):"
    )
    print("\n".join(lags.lines()))
    tidy_logs(logs, [run], keep=args.keep_logs, whose="the service's")
    last = max(orders.paid_at, default=0.0)
    record(
        args,
        {
            "orders_per_s": len(orders.paid_at) / last if last else float("nan"),
            "create_p99": orders.step(CREATE).percentile_ms(0.99),
            "seen_p99": orders.step(SEEN).percentile_ms(0.99),
            "order_p99": orders.step(ORDER).percentile_ms(0.99),
            "scans_per_s": scanned.rate,
            "scans_refused": sum(scanned.step.errors.values()),
            "read_model_p99": lags.worst_p99_ms(),
            "transactions_per_order": per_order,
            "oversold": oversold,
            "ceiling": setup.ceiling,
        },
    )


def report(
    args: argparse.Namespace, setup: Setup, orders: Orders, scanned: Any, cpu: Cpu, oversold: int
) -> None:
    last = max(orders.paid_at, default=0.0)
    rate = len(orders.paid_at) / last if last else 0.0
    print(
        f"paid orders: {args.clients} clients, 1 ticket each, seat by the sales desk, an event of"
        f" {setup.event.capacity} seats, at most {args.orders} orders / {args.seconds:g} s;"
        f" `linjerum run` at log level {args.log_level}; poll every"
        f" {args.poll_interval * 1000:g} ms; {psutil.cpu_count()} cores"
    )
    print_steps([(orders.steps[name], last) for name in (CREATE, PAY, SEEN, ORDER)])
    print_steps([(scanned.step, scanned.seconds)])
    outcomes = ", ".join(f"{k} {v}" for k, v in orders.outcomes.items()) or "-"
    print(
        f"orders paid {len(orders.paid_at)} in {last:.2f} s: {rate:.0f} orders/s"
        f" ({rate / PEER_ORDERS_PER_S:.1f} x the peer's {PEER_ORDERS_PER_S:g}/s);"
        f" {orders.polls} polls; {outcomes}"
    )
    refused = sum(scanned.step.errors.values())
    print(
        f"scans {len(scanned.step.latencies)} admitted, {refused} refused, {scanned.not_sent} not"
        f" sent: {scanned.rate:.0f}/s; oversold (event store) {oversold}"
    )
    print(
        f"ceiling: plain single-row INSERT commits/s {setup.ceiling:.0f}"
        f" ({args.ceiling_connections} connections) beside {rate:.0f} paid orders/s"
    )
    print(cpu.line() + f", over the {cpu.wall:.2f} s of the orders")
    if scanned.cpu is not None:
        print(scanned.cpu.line() + f", over the {scanned.cpu.wall:.2f} s of the scans")
    create_p99 = orders.step(CREATE).percentile_ms(0.99)
    order_p99 = orders.step(ORDER).percentile_ms(0.99)
    print(
        f"targets: >= {ORDERS_TARGET:.0f} orders/s: {rate:.0f}, {verdict(rate >= ORDERS_TARGET)};"
        f" create p99 <= {CREATE_P99_TARGET_MS:g} ms: {create_p99:.0f},"
        f" {verdict(create_p99 <= CREATE_P99_TARGET_MS)}; whole order p99 <="
        f" {ORDER_P99_TARGET_MS:g} ms: {order_p99:.0f},"
        f" {verdict(order_p99 <= ORDER_P99_TARGET_MS)};"
        f" scans >= {SCANS_TARGET:g}/s, none refused: {scanned.rate:.0f}/s, {refused} refused,"
        f" {verdict(scanned.rate >= SCANS_TARGET and not refused)};"
        f" oversold = 0: {verdict(oversold == 0)}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000, help="at most, and the seats")
    parser.add_argument("--seconds", type=float, default=60.0, help="the orders, at most")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--seats-per-row", type=int, default=50)
    parser.add_argument("--poll-interval", type=float, default=0.02, help="seconds")
    parser.add_argument("--max-polls", type=int, default=500, help="per order")
    parser.add_argument("--scan-seconds", type=float, default=30.0, help="the scans, at most")
    parser.add_argument("--pool-size", type=int, default=10, help="the service's DB pool")
    parser.add_argument("--log-level", default="info", help="the service's (info: as deployed)")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument("--ceiling-connections", type=int, default=16)
    parser.add_argument("--keep-logs", action="store_true", help="keep the service's logs")
    parser.add_argument("--data-dir", default=".linjerum-bench")
    add_arguments(parser)
    args = parser.parse_args()
    if args.orders < 1 or args.clients < 1:
        parser.error("need at least one order and one client")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if wanted(arguments):
        run_rounds(arguments, FIGURES)
    else:
        asyncio.run(main(arguments))
