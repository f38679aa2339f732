"""Embedded seat planner benchmark: how soon a 2,000-seat plan is usable in Chromium, and how
soon a seat bought through the API shows as taken in 200 open planners.

    .venv/bin/python bench/embeds.py                   # embedded servers under .linjerum-bench/
    DATABASE_URL=... NATS_URL=... .venv/bin/python bench/embeds.py --planners 200

One event of --sections rectangle sections of --rows rows of --seats-per-row seats (2,000 by
default), one ticket type over all of them, served by one `linjerum run` process (gateway,
relay, projector and the rest), so the read models follow the event store on their own.

(1) Interactive: --loads cold loads of `/embed/seat-planner?token=...` in Chromium (a fresh
browser context each), measured in the page from navigation start to the root's
`data-ready="true"` and to the `linjerum:seats-changed` message of a click on a free seat made as
soon as it is ready (the page posts to window.parent, itself when not framed). Skipped, saying
so, when /usr/bin/chromium or Playwright is missing.

(2) Propagation: --planners SSE streams of `/embed/api/live?token=...`, each past its first
`taken`; then --rounds purchases of one seat each (POST /api/v1/purchases with selected_seats,
a different seat each round), and for every stream the time from the purchase's 201 to a `taken`
event containing that seat. One event loop reads all streams, so a burst of 200 messages waits
a little in this process too: the figures are an upper bound of the service's.

Traffic goes to 127.0.0.1 only; the database and stream are the run's own and removed at the
end; every loop is bounded in count and the whole run by --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from harness.processes import HOST, READY, Component, linjerum, service_env, tidy_logs
from harness.report import percentile_ms, verdict
from harness.setup import META, bench_settings, rebuild_read_models, unlimited_keys

from domain import catalog as c
from domain import streams, venues
from infra.db import create_pool, migrate
from infra.embedded import free_port
from infra.logging import configure_logging
from infra.scratch import database_name
from infra.settings import Settings
from services.dev.sample_event import SLUG, first_ticket_type
from services.usecases import catalog_commands

CHROMIUM = Path("/usr/bin/chromium")
INTERACTIVE_TARGET_MS = 1000.0
PROPAGATION_TARGET_MS = 1000.0
ROUND_TIMEOUT_S = 10.0

# Installed before the page's own scripts: when the root is marked ready, when the first click
# lands and when the first seats-changed message arrives, on the page's clock (0 = navigation).
PAGE_PROBE = """
window.__bench = {};
new MutationObserver(() => {
  const root = document.querySelector('[data-ready="true"]');
  if (root && window.__bench.ready === undefined) window.__bench.ready = performance.now();
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-ready']});
window.addEventListener('click', () => {
  if (window.__bench.click === undefined) window.__bench.click = performance.now();
}, true);
window.addEventListener('message', (e) => {
  if (e.data && e.data.type === 'linjerum:seats-changed' && window.__bench.changed === undefined)
    window.__bench.changed = performance.now();
});
"""


@dataclass(frozen=True)
class Venue:
    token: str
    type_id: int
    seats: list[dict[str, Any]]  # one free seat of each row, the purchases' choices


async def prepare(settings: Settings, args: argparse.Namespace) -> Venue:
    """An organization, its venue of `sections` x `rows` x `seats_per_row` seats, the event on
    sale with one ticket type over every section, its read models and an unlimited API key."""
    pool = await create_pool(settings.database_url, 4)
    try:
        await migrate(pool)
        org = await catalog_commands.register_organization(
            pool,
            c.RegisterOrganization(
                slug=f"bench-{uuid.uuid4().hex[:8]}",
                name="Bench Teater",
                currency="DKK",
                stripe_account_id="acct_sim_bench",
            ),
            META,
        )
        rows = [
            venues.Row(identifier=f"R{r}", start=1, end=args.seats_per_row)
            for r in range(1, args.rows + 1)
        ]
        sections = [
            venues.SectionPlan(
                name=f"Sektion {n + 1}",
                display_order=n,
                position_x=40.0 + 580.0 * (n % 2),
                position_y=40.0 + 380.0 * (n // 2),
                width=540.0,
                height=340.0,
                rows=rows,
            )
            for n in range(args.sections)
        ]
        venue_id = await catalog_commands.register_venue(
            pool, org, venues.RegisterVenue(key="sal", name="Store Sal", sections=sections), META
        )
        venue = await catalog_commands.load_venue(pool, venue_id)
        section_ids = [s.id for s in venue.sections]
        plan = c.TicketTypePlan(name="Alm", price_cents=35000, section_ids=section_ids)
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
                terms=c.TicketTerms(),
            ),
            META,
        )
        type_id = await first_ticket_type(pool, streams.event(event_id))
        await rebuild_read_models(pool)
        (token,) = await unlimited_keys(pool, org)
        seats = [
            {"section_id": s, "row": f"R{r}", "seat_number": 1}
            for r in range(1, args.rows + 1)
            for s in section_ids
        ]
        return Venue(token, type_id, seats)
    finally:
        await pool.close()


async def start_service(
    settings: Settings, args: argparse.Namespace, logs: Path
) -> tuple[Component, str]:
    """`linjerum run` (the Stripe simulator inside) on a free port of 127.0.0.1; its base URL."""
    env = service_env(settings, log_level=args.log_level, pool_size=args.pool_size)
    port = free_port()
    env["STRIPE_SIM_PORT"] = str(free_port())
    command = linjerum(logs / "data", "run", "--no-seed", "--host", HOST, "--port", str(port))
    return await Component.start("linjerum-run", command, env, logs, ready=READY), (
        f"http://{HOST}:{port}"
    )


async def mint(session: aiohttp.ClientSession, base: str, key: str) -> str:
    """A planner token for the event, as a partner's server would get it."""
    async with session.post(
        f"{base}/api/v1/embed/seat-planner",
        json={"event_slug": SLUG},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        body = await response.json()
        if response.status != 201 and response.status != 200:
            raise RuntimeError(f"minting a planner token: HTTP {response.status} {body}")
        return str(body["embed"]["token"])


@dataclass
class Loads:
    ready_ms: list[float] = field(default_factory=list)
    changed_ms: list[float] = field(default_factory=list)
    click_to_message_ms: list[float] = field(default_factory=list)
    seats_drawn: int = 0


async def interactive(url: str, loads: int) -> Loads | str:
    """`loads` cold loads of the planner in Chromium; a reason instead when it cannot run."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing"
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    result = Loads()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            for _ in range(loads):
                context = await browser.new_context(viewport={"width": 1200, "height": 900})
                try:
                    page = await context.new_page()
                    await page.add_init_script(PAGE_PROBE)
                    await page.goto(url)
                    await page.wait_for_selector('[data-ready="true"]', timeout=30_000)
                    await page.click('[data-seat][aria-disabled="false"], [data-seat]:not(.taken)')
                    await page.wait_for_function(
                        "window.__bench.changed !== undefined", timeout=30_000
                    )
                    probe = await page.evaluate("window.__bench")
                    result.seats_drawn = await page.locator("[data-seat]").count()
                finally:
                    await context.close()
                result.ready_ms.append(probe["ready"])
                result.changed_ms.append(probe["changed"])
                result.click_to_message_ms.append(probe["changed"] - probe["click"])
        finally:
            await browser.close()
    return result


class Planners:
    """Open live streams of one event, and when each saw the seat of the current round taken."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count
        self.connected = 0
        self.seat: tuple[int, str, int] | None = None
        self.arrivals: dict[int, float] = {}
        self.errors: dict[str, int] = {}
        self._first = asyncio.Event()
        self._all_arrived = asyncio.Event()

    async def stream(self, session: aiohttp.ClientSession, n: int, gate: asyncio.Semaphore) -> None:
        """Reads one stream until cancelled; counts its first `taken` as connected."""
        try:
            async with gate:
                response = await session.get(self.url)
            async with response:
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                name, connected = "", False
                async for raw in response.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:") and name == "taken":
                        if not connected:
                            connected = True
                            self.connected += 1
                            if self.connected == self.count:
                                self._first.set()
                        self._seen(n, line[5:])
        except (aiohttp.ClientError, OSError, RuntimeError, TimeoutError) as exc:
            key = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
            self.errors[key] = self.errors.get(key, 0) + 1

    def _seen(self, n: int, data: str) -> None:
        if self.seat is None or n in self.arrivals:
            return
        taken = {
            (s["section_id"], s["row"], s["seat_number"]) for s in json.loads(data)["sold_seats"]
        }
        if self.seat in taken:
            self.arrivals[n] = time.perf_counter()
            if len(self.arrivals) == self.count:
                self._all_arrived.set()

    async def all_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._first.wait(), timeout)

    def expect(self, seat: dict[str, Any]) -> None:
        self.seat = (seat["section_id"], seat["row"], seat["seat_number"])
        self.arrivals = {}
        self._all_arrived.clear()

    async def all_arrived(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_arrived.wait(), timeout)


@dataclass
class Propagation:
    latencies: list[float] = field(default_factory=list)
    missed: int = 0
    before_201: int = 0
    purchase_ms: list[float] = field(default_factory=list)


async def buy(
    session: aiohttp.ClientSession, base: str, key: str, type_id: int, seat: dict[str, Any]
) -> None:
    order = {
        "event_slug": SLUG,
        "quantities": {str(type_id): 1},
        "selected_seats": {str(type_id): [seat]},
        "buyer": {"name": "Bench Buyer", "email": "buyer@example.com"},
    }
    async with session.post(
        f"{base}/api/v1/purchases", json=order, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        body = await response.read()
        if response.status != 201:
            raise RuntimeError(f"POST /purchases: HTTP {response.status} {body[:300]!r}")


async def propagation(
    base: str, key: str, token: str, venue: Venue, args: argparse.Namespace
) -> Propagation:
    """--planners open streams, --rounds purchases of one seat, and each stream's delay after
    each purchase's 201."""
    planners = Planners(f"{base}/embed/api/live?token={token}", args.planners)
    connector = aiohttp.TCPConnector(limit=args.planners + 10)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    result = Propagation()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        gate = asyncio.Semaphore(50)
        streams_ = [
            asyncio.create_task(planners.stream(session, n, gate)) for n in range(args.planners)
        ]
        try:
            await planners.all_connected(60)
            await asyncio.sleep(1.0)  # the connect burst settles
            for seat in venue.seats[: args.rounds]:
                planners.expect(seat)
                started = time.perf_counter()
                await buy(session, base, key, venue.type_id, seat)
                created = time.perf_counter()
                result.purchase_ms.append((created - started) * 1000)
                await planners.all_arrived(ROUND_TIMEOUT_S)
                delays = [at - created for at in planners.arrivals.values()]
                result.before_201 += sum(d < 0 for d in delays)
                result.latencies += [max(d, 0.0) for d in delays]
                result.missed += args.planners - len(delays)
                await asyncio.sleep(0.5)
        finally:
            for task in streams_:
                task.cancel()
            await asyncio.gather(*streams_, return_exceptions=True)
        if planners.errors:
            print(f"stream errors: {planners.errors}")
    return result


def report_interactive(args: argparse.Namespace, loads: Loads | str) -> None:
    print(
        f"(1) planner interactive in Chromium: {args.sections} sections x {args.rows} rows x"
        f" {args.seats_per_row} seats, {args.loads} cold loads"
    )
    if isinstance(loads, str):
        print(f"    skipped: {loads}")
        return
    for label, values in (
        ("navigation -> data-ready", loads.ready_ms),
        ("navigation -> first seats-changed", loads.changed_ms),
        ("  click -> seats-changed", loads.click_to_message_ms),
    ):
        print(
            f"    {label:36} median {statistics.median(values):7.0f} ms   max {max(values):7.0f} ms"
        )
    print(f"    seats drawn: {loads.seats_drawn}")
    worst = max(loads.changed_ms)
    print(
        f"    target: interactive (first click answered) within {INTERACTIVE_TARGET_MS:g} ms:"
        f" max {worst:.0f} ms, {verdict(worst < INTERACTIVE_TARGET_MS)}"
    )


def report_propagation(args: argparse.Namespace, result: Propagation) -> None:
    total = args.planners * args.rounds
    print(
        f"(2) availability change reaching {args.planners} open planners (SSE), {args.rounds}"
        f" purchases of one seat"
    )
    p50, p99 = percentile_ms(result.latencies, 0.5), percentile_ms(result.latencies, 0.99)
    worst = max(result.latencies, default=float("nan")) * 1000
    print(
        f"    201 -> taken seen: {len(result.latencies)} of {total} deliveries, p50 {p50:.0f} ms,"
        f" p99 {p99:.0f} ms, max {worst:.0f} ms; missed (none within {ROUND_TIMEOUT_S:g} s)"
        f" {result.missed}; seen before the 201 (counted as 0) {result.before_201}"
    )
    print(
        f"    POST /purchases: median {statistics.median(result.purchase_ms):.0f} ms,"
        f" max {max(result.purchase_ms):.0f} ms"
    )
    met = result.missed == 0 and worst < PROPAGATION_TARGET_MS
    print(
        f"    target: every planner within {PROPAGATION_TARGET_MS:g} ms:"
        f" max {worst:.0f} ms, {verdict(met)}"
    )


async def run(args: argparse.Namespace) -> None:
    configure_logging("warning")
    async with bench_settings(args.data_dir, "embeds") as settings:
        venue = await prepare(settings, args)
        logs = Path(args.data_dir).resolve() / f"embeds-{database_name(settings)}"
        service, base = await start_service(settings, args, logs)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                token = await mint(session, base, venue.token)
            loads = await interactive(f"{base}/embed/seat-planner?token={token}", args.loads)
            report_interactive(args, loads)
            result = await propagation(base, venue.token, token, venue, args)
            report_propagation(args, result)
        finally:
            await service.stop()
        tidy_logs(logs, [service], keep=args.keep_logs, whose="the service's")


async def main(args: argparse.Namespace) -> None:
    try:
        await asyncio.wait_for(run(args), args.max_seconds)
    except TimeoutError:
        print(f"stopped: the run took more than --max-seconds {args.max_seconds:g}")
        raise SystemExit(1) from None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", type=int, choices=range(1, 5), default=4)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--seats-per-row", type=int, default=25)
    parser.add_argument("--loads", type=int, default=5, help="cold loads in Chromium")
    parser.add_argument("--planners", type=int, default=200, help="open live streams")
    parser.add_argument("--rounds", type=int, default=5, help="purchases, one seat each")
    parser.add_argument("--pool-size", type=int, default=10, help="the service's DB pool")
    parser.add_argument("--log-level", default="warning", help="the service's")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="the whole run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service's logs")
    parser.add_argument("--data-dir", default=".linjerum-bench")
    args = parser.parse_args()
    if not 1 <= args.rows <= 200 or not 1 <= args.seats_per_row <= 200:
        parser.error("rows and seats per row: 1-200")
    if not 1 <= args.loads <= 50 or not 1 <= args.planners <= 1000:
        parser.error("loads: 1-50, planners: 1-1000")
    if not 1 <= args.rounds <= args.rows * args.sections:
        parser.error("rounds: 1 to one per row")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
