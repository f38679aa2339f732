"""Rate limits and the auth-failure throttle: rolling 60-second windows of the calls of each API
key (and of each of its dedicated buckets) and of the failed authentications of each source
address. `LocalLimits` keeps the windows in this process; `SharedLimits`
(services/api/shared_limits.py) holds them across every gateway on the database."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

WINDOW_SECONDS = 60.0
AUTH_FAILURE_LIMIT = 10
MAX_TRACKED = 100_000

Windows = Sequence[tuple[str, int]]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int


def retry_seconds(wait: float) -> int:
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
        return retry_seconds(log[0] + self._window - now)

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
        the full one, else the first one's (the key's own limit, which the headers report)."""
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
        return verdicts[0]
