"""Rolling 60-second windows, kept per gateway process: request logs per API key and bucket,
and failed-authentication logs per source address."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_SECONDS = 60.0
AUTH_FAILURE_LIMIT = 10
MAX_TRACKED = 100_000


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int


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

    def take(self, key: object, limit: int, now: float) -> Verdict:
        """Count one request if the window has room; a refused request is not counted, so a
        client that keeps retrying still gets in once the oldest request leaves the window."""
        log = self._log(key, now)
        if len(log) >= limit:
            retry = max(1, math.ceil(log[0] + self._window - now))
            return Verdict(False, limit, 0, retry)
        log.append(now)
        return Verdict(True, limit, limit - len(log), 0)

    def count(self, key: object, now: float) -> int:
        return len(self._log(key, now))

    def add(self, key: object, now: float) -> None:
        self._log(key, now).append(now)
