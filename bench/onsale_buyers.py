"""The on-sale's buyers (bench/onsale.py): each auto-selects seats, opens a purchase with them,
pays through the Stripe simulator and polls until the purchase is paid. What they saw is counted
as they go, in one load process or several (`Sale`); what the event store says was sold is
counted afterwards (`Stored`), and the two must agree."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from harness.load import Share
from harness.report import Step
from harness.setup import BenchEvent

from domain import streams
from services.dev.sample_event import SLUG

RETRYABLE = ("seats_taken", "insufficient_availability")


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

    def step(self, name: str) -> Step:
        return self.steps.setdefault(name, Step(name))

    @classmethod
    def merged(cls, shares: list[Sale]) -> Sale:
        """The load processes' shares of the same on-sale as one."""
        sale = shares[0]
        for other in shares[1:]:
            for name, theirs in other.steps.items():
                mine = sale.step(name)
                mine.latencies += theirs.latencies
                mine.errors.update(theirs.errors)
            sale.outcomes.update(other.outcomes)
            sale.conflicts.update(other.conflicts)
            sale.retries += other.retries
            sale.held += other.held
            sale.paid += other.paid
            sale.seconds = max(sale.seconds, other.seconds)
        return sale

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
        streams.event(event_id),
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
