"""Rate limits and the auth-failure throttle: rolling 60-second windows of the calls of each API
key (and of each of its dedicated buckets) and of the failed authentications of each source
address.

`LocalLimits` keeps the windows in this process. `SharedLimits` holds them across every gateway
on the database (infra/rate_limits.py): a gateway claims a slice of a window's room, sized to its
recent demand, and spends it from memory, so a busy key costs a round trip per slice, not per
call, and all gateways together never pass the limit. While PostgreSQL cannot be reached it falls
back to its own `LocalLimits`: each gateway then holds the limits alone (N gateways: up to N
times a limit) instead of refusing calls it could still answer from memory."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog
from aiohttp import web

from infra import rate_limits
from infra.changes import ChangeFeed
from infra.rate_limits import AUTH_BLOCKS, Claim
from infra.supervise import OUTAGES, stop_task
from services.api.errors import unavailable
from services.api.memo import Memo

log = structlog.get_logger(__name__)

WINDOW_SECONDS = 60.0
AUTH_FAILURE_LIMIT = 10
MAX_TRACKED = 100_000
# A slice of several calls is spent within this long of its claim, or dropped; the shared window
# counts such a slice this much longer, so the calls never add up past the limit.
HOLD_SECONDS = 1.0
# A claim asks for the calls expected in this long (at the demand of the last HOLD_SECONDS),
# so a slice is spent well before it must be dropped, and for no more than MAX_SLICE.
SLICE_SECONDS = 0.5
MAX_SLICE = 1000
# A claim that takes longer counts as PostgreSQL being out of reach.
CLAIM_SECONDS = 2.0
# After a failed claim the windows are kept in this process this long before trying again.
LOCAL_SECONDS = 5.0
PURGE_SECONDS = 300.0

Windows = Sequence[tuple[str, int]]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int


def _seconds(wait: float) -> int:
    """A Retry-After: whole seconds, at least one."""
    return max(1, math.ceil(wait))


class RollingWindow:
    """A log of timestamps per key: exact rolling windows, memory bounded by the limit."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self._window = window
        self._logs: dict[object, deque[float]] = {}

    def _log(self, key: object, now: float) -> deque[float]:
        log = self._logs.get(key)
        if log is None:
            if len(self._logs) >= MAX_TRACKED:
                self._forget_idle(now)
            log = self._logs[key] = deque()
        while log and log[0] <= now - self._window:
            log.popleft()
        return log

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, log in self._logs.items() if not log or log[-1] <= now - self._window]
        for key in idle:
            del self._logs[key]

    def wait(self, key: object, limit: int, now: float) -> int:
        """Seconds until the window has room (the oldest entry leaves it), 0 while it has."""
        log = self._log(key, now)
        if len(log) < limit:
            return 0
        return _seconds(log[0] + self._window - now)

    def take(self, key: object, limit: int, now: float) -> Verdict:
        """Count one request if the window has room; a refused request is not counted, so a
        client that keeps retrying still gets in once the oldest request leaves the window."""
        retry = self.wait(key, limit, now)
        if retry:
            return Verdict(False, limit, 0, retry)
        log = self._log(key, now)
        log.append(now)
        return Verdict(True, limit, limit - len(log), 0)

    def count(self, key: object, now: float) -> int:
        return len(self._log(key, now))

    def add(self, key: object, now: float) -> None:
        self._log(key, now).append(now)


class Limits(Protocol):
    """What the access check asks; every answer of seconds is a Retry-After, 0 for none."""

    async def auth_refusal(self, source: str) -> int:
        """Whether `source` is refused for its failed authentications."""
        ...

    async def auth_failed(self, source: str) -> int:
        """Counts a failed authentication of `source`, or refuses it when the window is full."""
        ...

    async def take(self, windows: Windows) -> Verdict:
        """Counts a call in each `(window, limit)`, or in none when one is full; the verdict of
        the full one, else the one with the least room."""
        ...


class LocalLimits:
    """The windows of this process alone."""

    def __init__(self) -> None:
        self._auth_failures = RollingWindow()
        self._requests = RollingWindow()

    async def auth_refusal(self, source: str) -> int:
        return self._auth_failures.wait(source, AUTH_FAILURE_LIMIT, time.monotonic())

    async def auth_failed(self, source: str) -> int:
        return self._auth_failures.take(source, AUTH_FAILURE_LIMIT, time.monotonic()).retry_after

    async def take(self, windows: Windows) -> Verdict:
        now = time.monotonic()
        verdicts = []
        for window, limit in windows:
            used = self._requests.count(window, now)
            if used >= limit:
                return Verdict(False, limit, 0, self._requests.wait(window, limit, now))
            verdicts.append(Verdict(True, limit, limit - used - 1, 0))
        for window, _ in windows:
            self._requests.add(window, now)
        return min(verdicts, key=lambda v: v.remaining)


@dataclass(slots=True)
class Budget:
    """This gateway's share of one shared window: calls claimed and not yet spent (usable until
    `spend_by`), the window's room as of the last claim, and, once it is full, when it has room
    again: no claim can succeed before then (a window's count only falls as its oldest claims
    end), so until then calls are refused here without asking."""

    limit: int
    tokens: int = 0
    spend_by: float = 0.0
    room: int = 0
    full_until: float = 0.0
    calls: int = 0
    calls_before: int = 0
    period_start: float = 0.0

    def note_call(self, now: float) -> None:
        """Demand: the calls of the current HOLD_SECONDS period and of the one before."""
        if now - self.period_start >= HOLD_SECONDS:
            recent = now - self.period_start < 2 * HOLD_SECONDS
            self.calls_before = self.calls if recent else 0
            self.calls = 0
            self.period_start = now
        self.calls += 1

    def ask(self) -> int:
        """What to claim: the calls expected in the next SLICE_SECONDS."""
        expected = math.ceil(max(self.calls, self.calls_before) * SLICE_SECONDS / HOLD_SECONDS)
        return min(max(expected, 1), MAX_SLICE)

    def refusal(self, now: float) -> int:
        """Retry-After while the window is known to be full and nothing claimed is left."""
        if self.tokens > 0 and now <= self.spend_by:
            return 0
        return _seconds(self.full_until - now) if self.full_until > now else 0

    def spend(self, now: float) -> Verdict | None:
        """A call from what was claimed, a refusal while the window is full, or None: claim."""
        if self.tokens > 0 and now <= self.spend_by:
            self.tokens -= 1
            return Verdict(True, self.limit, self.room + self.tokens, 0)
        self.tokens = 0
        if self.full_until > now:
            return Verdict(False, self.limit, 0, _seconds(self.full_until - now))
        return None

    def claimed(self, claim: Claim, sent: float, now: float) -> Verdict:
        """The verdict of the call that made the claim (sent at `sent`, answered at `now`); the
        rest of the slice is kept for the next calls. A slice of one is spent at once."""
        self.full_until = now + claim.wait if claim.remaining == 0 else 0.0
        if claim.granted == 0:
            self.tokens = 0
            return Verdict(False, self.limit, 0, _seconds(claim.wait))
        self.tokens = claim.granted - 1
        self.spend_by = sent + HOLD_SECONDS if claim.granted > 1 else sent
        self.room = claim.remaining
        return Verdict(True, self.limit, self.room + self.tokens, 0)

    def give_back(self) -> None:
        """A call spent here but refused by another window; dropped if its slice has ended."""
        self.tokens += 1

    def idle(self, now: float) -> bool:
        return now > self.spend_by and now >= self.full_until


class SharedLimits:
    """The windows held with every other gateway on the database."""

    def __init__(self, pool: asyncpg.Pool, changes: ChangeFeed) -> None:
        self._pool = pool
        self._budgets: dict[str, tuple[Budget, asyncio.Lock]] = {}
        # Addresses refused for their failures, as read from the database until a fill of any
        # auth window is announced: other gateways' failures reach this one that way.
        self._blocks: Memo[float] = Memo(changes, (AUTH_BLOCKS,), ttl=WINDOW_SECONDS)
        self._local = LocalLimits()
        self._local_until = 0.0

    async def auth_refusal(self, source: str) -> int:
        if self._is_local():
            return await self._local.auth_refusal(source)
        window = _auth_window(source)
        budget = self._budget(window, AUTH_FAILURE_LIMIT)
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
        budget, lock = self._entry(window, AUTH_FAILURE_LIMIT)
        verdict = await self._claim(window, budget, lock, announce=AUTH_BLOCKS)
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
        entries = [(window, *self._entry(window, limit)) for window, limit in ordered]
        for _, budget, _ in entries:
            retry = budget.refusal(now)
            if retry:
                return Verdict(False, budget.limit, 0, retry)
        verdicts: list[Verdict] = []
        for window, budget, lock in entries:
            # Read again: a claim for the window before may have taken a while.
            now = time.monotonic()
            budget.note_call(now)
            verdict = budget.spend(now) or await self._claim(window, budget, lock)
            if verdict is None or not verdict.allowed:
                for _, spent, _ in entries[: len(verdicts)]:
                    spent.give_back()
                return verdict or await self._local.take(windows)
            verdicts.append(verdict)
        return min(verdicts, key=lambda v: v.remaining)

    async def purging(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp's cleanup context: deletes ended windows while the gateway serves."""
        task = asyncio.create_task(self._purge_forever(), name="rate-window-purge")
        yield
        await stop_task(task)

    async def _claim(
        self, window: str, budget: Budget, lock: asyncio.Lock, announce: str | None = None
    ) -> Verdict | None:
        """One claim at a time per window: calls arriving meanwhile spend its slice. None when
        PostgreSQL cannot be reached."""
        async with lock:
            sent = time.monotonic()
            # The claim before this one may have left calls, or found the window full.
            verdict = budget.spend(sent)
            if verdict is not None:
                return verdict
            try:
                async with asyncio.timeout(CLAIM_SECONDS):
                    claim = await rate_limits.claim(
                        self._pool,
                        window,
                        budget.limit,
                        budget.ask(),
                        window=WINDOW_SECONDS,
                        hold=HOLD_SECONDS,
                        announce=announce,
                    )
            except Exception as exc:
                self._fall_back(exc)
                return None
            self._shared_again()
            return budget.claimed(claim, sent, time.monotonic())

    async def _blocked_until(self, window: str) -> float:
        found = await rate_limits.claim(
            self._pool, window, AUTH_FAILURE_LIMIT, 0, window=WINDOW_SECONDS, hold=0.0
        )
        self._shared_again()
        return time.monotonic() + found.wait if found.remaining == 0 else 0.0

    def _entry(self, window: str, limit: int) -> tuple[Budget, asyncio.Lock]:
        entry = self._budgets.get(window)
        if entry is None:
            if len(self._budgets) >= MAX_TRACKED:
                self._forget_idle()
            entry = self._budgets[window] = (Budget(limit), asyncio.Lock())
        return entry

    def _budget(self, window: str, limit: int) -> Budget:
        return self._entry(window, limit)[0]

    def _forget_idle(self) -> None:
        now = time.monotonic()
        idle = [
            window
            for window, (budget, lock) in self._budgets.items()
            if budget.idle(now) and not lock.locked()
        ]
        for window in idle:
            del self._budgets[window]

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


def _auth_window(source: str) -> str:
    return f"auth:{source}"
