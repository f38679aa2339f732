"""Rate limits held across every gateway on the database (infra/rate_limits.py): a gateway claims
a slice of a window's room, sized to its recent demand, and spends it from memory, so a busy key
costs a round trip per slice, not per call, and all gateways together never pass the limit.
While PostgreSQL cannot be reached it falls back to its own `LocalLimits`: each gateway then
holds the limits alone (N gateways: up to N times a limit) instead of refusing calls it could
still answer from memory. A key busy enough to be spent in slices has its next slice claimed
while half of the current one is left, so in an on-sale its calls do not all wait for a claim
each time a slice runs out (the database is busiest then, and every call of the key would wait
behind that one round trip)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import structlog
from aiohttp import web

from infra import rate_limits
from infra.changes import ChangeFeed
from infra.metrics import RATE_CLAIMS
from infra.rate_limits import AUTH_BLOCKS, Claim, Unspent
from infra.supervise import OUTAGES, stop_task
from services.api.errors import unavailable
from services.api.limits import (
    AUTH_FAILURE_LIMIT,
    MAX_TRACKED,
    WINDOW_SECONDS,
    LocalLimits,
    Verdict,
    Windows,
    retry_seconds,
)
from services.api.memo import Memo

log = structlog.get_logger(__name__)

# A slice of several calls is spent within this long of its claim, or dropped; the shared window
# counts such a slice this much longer, so the calls never add up past the limit.
HOLD_SECONDS = 1.0
# A claim asks for the calls expected in this long (at the demand of the last HOLD_SECONDS),
# so a slice is spent well before it must be dropped, and for no more than MAX_SLICE.
SLICE_SECONDS = 0.5
MAX_SLICE = 1000
# A key with this many calls in the current period is asked for at their rate (counted over at
# least RATE_SPAN): at the start of a rush, the calls of a whole period are far behind it.
RUSH_CALLS = 16
RATE_SPAN = 0.05
# The window's least room for a claim ahead: the database grants a sixteenth of the room left,
# and a slice of one is spent at once, so a claim ahead is only made while it gets two or more.
ROOM_AHEAD = 32
# A claim that takes longer counts as PostgreSQL being out of reach.
CLAIM_SECONDS = 2.0
# After a failed claim the windows are kept in this process this long before trying again.
LOCAL_SECONDS = 5.0
PURGE_SECONDS = 300.0


@dataclass(slots=True)
class Budget:
    """This gateway's share of one shared window: calls claimed and not yet spent (usable until
    `spend_by`), the next slice when it was claimed ahead (`ahead_tokens`, usable until
    `ahead_by`), the window's room as of the last claim, and, once it is full, when it has room
    again: no claim can succeed before then (a window's count only falls as its oldest claims
    end), so until then calls are refused here without asking. A slice's calls left unspent
    when its hold ends are given back with the next claim (`unspent`), each slice by when the
    window counts it until (`counted_until`, `ahead_counted_until`)."""

    limit: int
    tokens: int = 0
    spend_by: float = 0.0
    counted_until: datetime | None = None
    ahead_tokens: int = 0
    ahead_by: float = 0.0
    ahead_counted_until: datetime | None = None
    unspent: list[Unspent] = field(default_factory=list)
    room: int = 0
    full_until: float = 0.0
    calls: int = 0
    calls_before: int = 0
    period_start: float = 0.0
    last_call: float = 0.0

    def note_call(self, now: float) -> None:
        """Demand: the calls of the current HOLD_SECONDS period and of the one before."""
        if now - self.period_start >= HOLD_SECONDS:
            recent = now - self.period_start < 2 * HOLD_SECONDS
            self.calls_before = self.calls if recent else 0
            self.calls = 0
            self.period_start = now
        self.calls += 1
        self.last_call = now

    def ask(self, waiting: int = 0) -> int:
        """What to claim: the calls expected in the next SLICE_SECONDS, and at least the calls
        `waiting` for this claim. A quiet key is asked for exactly; a rushed one at the rate of
        its calls so far (a slice not spent in time only counts against the key's own limit)."""
        per_second = max(self.calls, self.calls_before) / HOLD_SECONDS
        if self.calls >= RUSH_CALLS:
            span = max(self.last_call - self.period_start, RATE_SPAN)
            per_second = max(per_second, self.calls / span)
        expected = math.ceil(per_second * SLICE_SECONDS)
        return min(max(expected, waiting, 1), MAX_SLICE)

    def at_hand(self, now: float) -> bool:
        """Whether a claimed call can be spent: from the current slice, or from the one claimed
        ahead, which then becomes the current one. A slice whose hold has ended is put aside
        to be given back."""
        if self.tokens > 0 and now <= self.spend_by:
            return True
        self._set_aside(self.tokens, self.counted_until)
        self.tokens = 0
        if self.ahead_tokens > 0 and now > self.ahead_by:
            self._set_aside(self.ahead_tokens, self.ahead_counted_until)
            self.ahead_tokens = 0
        if self.ahead_tokens > 0:
            self.tokens, self.spend_by = self.ahead_tokens, self.ahead_by
            self.counted_until = self.ahead_counted_until
            self.ahead_tokens = 0
            return True
        return False

    def _set_aside(self, calls: int, counted_until: datetime | None) -> None:
        if calls > 0 and counted_until is not None:
            self.unspent.append(Unspent(counted_until, calls))

    def given_back(self) -> list[Unspent]:
        """The calls put aside, for the claim about to be made (which takes them off)."""
        unspent, self.unspent = self.unspent, []
        return unspent

    def refusal(self, now: float) -> int:
        """Retry-After while the window is known to be full and nothing claimed is left."""
        if self.at_hand(now):
            return 0
        return retry_seconds(self.full_until - now) if self.full_until > now else 0

    def spend(self, now: float) -> Verdict | None:
        """A call from what was claimed, a refusal while the window is full, or None: claim."""
        if self.at_hand(now):
            self.tokens -= 1
            return Verdict(True, self.limit, self.room + self.tokens + self.ahead_tokens, 0)
        if self.full_until > now:
            return Verdict(False, self.limit, 0, retry_seconds(self.full_until - now))
        return None

    def due_ahead(self, now: float) -> bool:
        """Whether to claim the next slice now: a busy key (slices of several calls) has half
        a slice or less left, nothing claimed ahead yet, and the window room for two calls."""
        asked = self.ask()
        return (
            asked > 1
            and self.ahead_tokens == 0
            and self.tokens * 2 <= asked
            and self.room >= ROOM_AHEAD
            and self.full_until <= now
        )

    def claimed(self, claim: Claim, sent: float, now: float) -> Verdict:
        """The verdict of the call that made the claim (sent at `sent`, answered at `now`); the
        rest of the slice is kept for the next calls. A slice of one is spent at once."""
        self._heard(claim, now)
        if claim.granted == 0:
            self.tokens = 0
            return Verdict(False, self.limit, 0, retry_seconds(claim.wait))
        self.tokens = claim.granted - 1
        self.spend_by = sent + HOLD_SECONDS if claim.granted > 1 else sent
        self.counted_until = claim.counted_until
        return Verdict(True, self.limit, self.room + self.tokens, 0)

    def claimed_ahead(self, claim: Claim, sent: float, now: float) -> None:
        """Keeps a slice claimed ahead for when the current one is spent. A slice of one, which
        only another gateway's claims in between leave, cannot be kept (the window counts it
        without a hold): it is given back."""
        self._heard(claim, now)
        self._set_aside(self.ahead_tokens, self.ahead_counted_until)
        self.ahead_tokens = 0
        if claim.granted > 1:
            self.ahead_tokens, self.ahead_by = claim.granted, sent + HOLD_SECONDS
            self.ahead_counted_until = claim.counted_until
        else:
            self._set_aside(claim.granted, claim.counted_until)

    def _heard(self, claim: Claim, now: float) -> None:
        """The window's room as of this claim, and when it has room again if it is full."""
        self.full_until = now + claim.wait if claim.remaining == 0 else 0.0
        self.room = claim.remaining

    def give_back(self) -> None:
        """A call spent here but refused by another window; dropped if its slice has ended."""
        self.tokens += 1

    def idle(self, now: float) -> bool:
        return now > max(self.spend_by, self.ahead_by) and now >= self.full_until


@dataclass
class _Window:
    """A shared window as this gateway holds it: its budget, the calls waiting for a claim
    (each answered with its verdict, or None while PostgreSQL cannot be reached) and the claim
    under way, if any: at most one per window."""

    budget: Budget
    waiting: deque[asyncio.Future[Verdict | None]] = field(default_factory=deque)
    claiming: asyncio.Task[None] | None = None

    def claims(self) -> bool:
        return self.claiming is not None and not self.claiming.done()


class SharedLimits:
    """The windows held with every other gateway on the database."""

    def __init__(self, pool: asyncpg.Pool, changes: ChangeFeed) -> None:
        self._pool = pool
        self._windows: dict[str, _Window] = {}
        # Addresses refused for their failures, as read from the database until a fill of any
        # auth window is announced: other gateways' failures reach this one that way.
        self._blocks: Memo[float] = Memo(changes, (AUTH_BLOCKS,), ttl=WINDOW_SECONDS)
        self._local = LocalLimits()
        self._local_until = 0.0
        self._claims: set[asyncio.Task[None]] = set()

    async def auth_refusal(self, source: str) -> int:
        if self._is_local():
            return await self._local.auth_refusal(source)
        window = _auth_window(source)
        budget = self._entry(window, AUTH_FAILURE_LIMIT).budget
        if budget.full_until <= time.monotonic():
            try:
                until = await self._blocks.get(window, lambda: self._blocked_until(window))
            except Exception as exc:
                self._fall_back(exc)
                return await self._local.auth_refusal(source)
            budget.full_until = max(budget.full_until, until)
        return budget.refusal(time.monotonic())

    async def auth_failed(self, source: str) -> int:
        if self._is_local():
            return await self._local.auth_failed(source)
        window = _auth_window(source)
        verdict = await self._claim(window, self._entry(window, AUTH_FAILURE_LIMIT), AUTH_BLOCKS)
        if verdict is None:
            return await self._local.auth_failed(source)
        return verdict.retry_after

    async def take(self, windows: Windows) -> Verdict:
        if self._is_local():
            return await self._local.take(windows)
        now = time.monotonic()
        # The tightest window first: a call it refuses has taken nothing from the others (what
        # a looser one refuses after a tighter one granted it may be lost from a slice of one).
        ordered = sorted(windows, key=lambda window: window[1])
        entries = [(window, self._entry(window, limit)) for window, limit in ordered]
        for _, entry in entries:
            retry = entry.budget.refusal(now)
            if retry:
                return Verdict(False, entry.budget.limit, 0, retry)
        verdicts: list[Verdict] = []
        for window, entry in entries:
            # Read again: a claim for the window before may have taken a while.
            now = time.monotonic()
            entry.budget.note_call(now)
            verdict = entry.budget.spend(now) or await self._claim(window, entry)
            if verdict is None or not verdict.allowed:
                for _, spent in entries[: len(verdicts)]:
                    spent.budget.give_back()
                return verdict or await self._local.take(windows)
            verdicts.append(verdict)
        for window, entry in entries:
            if not entry.claims() and entry.budget.due_ahead(time.monotonic()):
                self._start_claiming(window, entry, None)
        return verdicts[ordered.index(windows[0])]

    async def purging(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp's cleanup context: deletes ended windows while the gateway serves."""
        task = asyncio.create_task(self._purge_forever(), name="rate-window-purge")
        yield
        await stop_task(task)
        for claim in list(self._claims):
            await stop_task(claim)

    async def _claim(
        self, window: str, entry: _Window, announce: str | None = None
    ) -> Verdict | None:
        """Waits for the window's claim under way (or starts one): its answer is handed out to
        every call waiting for it at once, not one call at a time. None when PostgreSQL cannot
        be reached."""
        turn: asyncio.Future[Verdict | None] = asyncio.get_running_loop().create_future()
        entry.waiting.append(turn)
        if not entry.claims():
            self._start_claiming(window, entry, announce)
        return await turn

    def _start_claiming(self, window: str, entry: _Window, announce: str | None) -> None:
        task = asyncio.create_task(self._claiming(window, entry, announce))
        entry.claiming = task
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    async def _claiming(self, window: str, entry: _Window, announce: str | None) -> None:
        """Claims until no call waits and no slice is due ahead. A claim made while calls are
        still at hand is kept as the next slice; one that calls waited for is theirs at once."""
        budget = entry.budget
        try:
            while True:
                self._hand_out(entry)
                waited = bool(entry.waiting)
                if not waited and not budget.due_ahead(time.monotonic()):
                    return
                RATE_CLAIMS.labels("waited" if waited else "ahead").inc()
                sent = time.monotonic()
                asked = budget.ask(len(entry.waiting))
                given_back = budget.given_back()
                claim = await self._ask(window, budget.limit, asked, announce, given_back)
                if claim is None:
                    budget.unspent[:0] = given_back
                    _answer_all(entry.waiting, None)
                    return
                now = time.monotonic()
                first = _first_waiting(entry.waiting)
                if first is not None and not budget.at_hand(now):
                    first.set_result(budget.claimed(claim, sent, now))
                else:
                    budget.claimed_ahead(claim, sent, now)
        except asyncio.CancelledError:
            for turn in entry.waiting:
                turn.cancel()
            entry.waiting.clear()
            raise
        except Exception as exc:
            # Not an unreachable database (that is None): the calls waiting fail with it.
            log.warning("rate_claim_failed", window=window, error=repr(exc))
            for turn in entry.waiting:
                if not turn.done():
                    turn.set_exception(exc)
            entry.waiting.clear()

    def _hand_out(self, entry: _Window) -> None:
        """Every waiting call that can be answered from what is at hand now is."""
        now = time.monotonic()
        while (turn := _first_waiting(entry.waiting)) is not None:
            verdict = entry.budget.spend(now)
            if verdict is None:
                return
            entry.waiting.popleft()
            turn.set_result(verdict)

    async def _ask(
        self,
        window: str,
        limit: int,
        asked: int,
        announce: str | None,
        given_back: list[Unspent],
    ) -> Claim | None:
        """The database's claim; None when PostgreSQL cannot be reached."""
        try:
            async with asyncio.timeout(CLAIM_SECONDS):
                claim = await rate_limits.claim(
                    self._pool,
                    window,
                    limit,
                    asked,
                    window=WINDOW_SECONDS,
                    hold=HOLD_SECONDS,
                    announce=announce,
                    given_back=given_back,
                )
        except Exception as exc:
            self._fall_back(exc)
            return None
        self._shared_again()
        return claim

    async def _blocked_until(self, window: str) -> float:
        found = await rate_limits.claim(
            self._pool, window, AUTH_FAILURE_LIMIT, 0, window=WINDOW_SECONDS, hold=0.0
        )
        self._shared_again()
        return time.monotonic() + found.wait if found.remaining == 0 else 0.0

    def _entry(self, window: str, limit: int) -> _Window:
        entry = self._windows.get(window)
        if entry is None:
            if len(self._windows) >= MAX_TRACKED:
                self._forget_idle()
            entry = self._windows[window] = _Window(Budget(limit))
        return entry

    def _forget_idle(self) -> None:
        now = time.monotonic()
        idle = [
            window
            for window, entry in self._windows.items()
            if entry.budget.idle(now) and not entry.waiting and not entry.claims()
        ]
        for window in idle:
            del self._windows[window]

    def _is_local(self) -> bool:
        return time.monotonic() < self._local_until

    def _fall_back(self, exc: Exception) -> None:
        """Fail open to this process's windows while PostgreSQL is out of reach (re-raises
        anything else); the shared ones are tried again after LOCAL_SECONDS."""
        if not unavailable(exc):
            raise exc
        if not self._local_until:
            OUTAGES.down("postgresql", exc, worker="rate-limits")
        self._local_until = time.monotonic() + LOCAL_SECONDS

    def _shared_again(self) -> None:
        if self._local_until:
            self._local_until = 0.0
            OUTAGES.up("postgresql")
            log.info("rate_limits_shared_again")

    async def _purge_forever(self) -> None:
        while True:
            try:
                deleted = await rate_limits.purge(self._pool)
            except Exception as exc:
                # What is left is deleted next time; no call waits for it.
                tell = log.debug if unavailable(exc) else log.warning
                tell("rate_windows_purge_failed", error=repr(exc))
            else:
                if deleted:
                    log.info("rate_windows_purged", deleted=deleted)
            await asyncio.sleep(PURGE_SECONDS)


def _first_waiting(
    waiting: deque[asyncio.Future[Verdict | None]],
) -> asyncio.Future[Verdict | None] | None:
    """The first call still waiting (those cancelled meanwhile are dropped)."""
    while waiting and waiting[0].done():
        waiting.popleft()
    return waiting[0] if waiting else None


def _answer_all(waiting: deque[asyncio.Future[Verdict | None]], verdict: Verdict | None) -> None:
    while (turn := _first_waiting(waiting)) is not None:
        waiting.popleft()
        turn.set_result(verdict)


def _auth_window(source: str) -> str:
    return f"auth:{source}"
