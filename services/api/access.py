"""Who may call the partner API and how often: bearer keys looked up by hash and kept in memory
only until a key changes (a revocation notifies every gateway, so it holds at once), a per-IP
throttle on failed authentications, and per-key rolling-window rate limits with the spec's headers.

The windows are kept per gateway process: behind a load balancer with N gateways a key can
reach N times its limit. The README says so."""

from __future__ import annotations

import time

import asyncpg
from aiohttp import web

from infra.apikeys import ApiKey, authenticate
from services.api.errors import ApiError
from services.api.limits import AUTH_FAILURE_LIMIT, RollingWindow, Verdict
from services.api.memo import Memo
from services.api.routes import Route

BUCKET_LIMITS = {"discount_validate": 20, "ticket_pdf": 10}
KEY_SECONDS = 60.0


class AccessControl:
    """The state the checks share within one gateway process."""

    def __init__(self, pool: asyncpg.Pool, keys: Memo[ApiKey | None]) -> None:
        self._pool = pool
        self._keys = keys
        self._auth_failures = RollingWindow()
        self._requests = RollingWindow()

    async def admit(self, request: web.Request, route: Route) -> tuple[ApiKey, Verdict]:
        """The caller's key and the rate-limit verdict to report; raises the 401/429."""
        now = time.monotonic()
        source = request.remote or "unknown"
        failures = self._auth_failures.count(source, now)
        if failures >= AUTH_FAILURE_LIMIT:
            retry = self._auth_failures.take(source, AUTH_FAILURE_LIMIT, now).retry_after
            raise ApiError(429, "too_many_auth_failures", headers={"Retry-After": str(retry)})
        key = await self._key_of(request)
        if key is None:
            self._auth_failures.add(source, now)
            raise ApiError(401, "unauthorized", "missing, invalid or revoked API key")
        return key, self._take(key, route, now)

    async def _key_of(self, request: web.Request) -> ApiKey | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 200:
            return None
        # Keyed by the token itself, which this process holds anyway while it serves the
        # request: hashing it again on every hit would cost more than the lookup saves.
        return await self._keys.get(token, lambda: authenticate(self._pool, token))

    def _take(self, key: ApiKey, route: Route, now: float) -> Verdict:
        """Counts the request in the key's window and in the route's dedicated bucket, or in
        neither when either is full. The headers report the tighter of the two."""
        windows = [((key.id, "all"), key.rate_limit_per_minute)]
        if route.bucket:
            windows.append(((key.id, route.bucket), BUCKET_LIMITS[route.bucket]))
        verdicts = []
        for window, limit in windows:
            used = self._requests.count(window, now)
            if used >= limit:
                refused = self._requests.take(window, limit, now)
                raise ApiError(
                    429,
                    "rate_limited",
                    headers={
                        "Retry-After": str(refused.retry_after),
                        "X-RateLimit-Limit": str(limit),
                        "X-RateLimit-Remaining": "0",
                    },
                )
            verdicts.append(Verdict(True, limit, limit - used - 1, 0))
        for window, _ in windows:
            self._requests.add(window, now)
        return min(verdicts, key=lambda v: v.remaining)
