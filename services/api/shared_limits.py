"""Rate limits held across every gateway on the database (infra/rate_limits.py): a gateway claims
a slice of a window's room, sized to its recent demand, and spends it from memory, so a busy key
costs a round trip per slice, not per call, and all gateways together never pass the limit.
While PostgreSQL cannot be reached it falls back to its own `LocalLimits`: each gateway then
holds the limits alone (N gateways: up to N times a limit) instead of refusing calls it could
still answer from memory. A key busy enough to be spent in slices has its next slice claimed
while half of the current one is left, so in an on-sale its calls do not all wait for a claim
each time a slice runs out (the database is busiest then, and every call of the key would wait
behind that one round trip). What a gateway's share of one window is, and when its slices
are spent or claimed, is services/api/rate_budgets.py."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

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
)
from services.api.memo import Memo
from services.api.rate_budgets import HOLD_SECONDS, Budget

log = structlog.get_logger(__name__)

# A claim that takes longer counts as PostgreSQL being out of reach.
CLAIM_SECONDS = 2.0
# After a failed claim the windows are kept in this process this long before trying again.
LOCAL_SECONDS = 5.0
PURGE_SECONDS = 300.0


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
