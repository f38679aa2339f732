"""Who may call the partner API and how often: bearer keys looked up by hash and kept in memory
only until a key changes (a revocation notifies every gateway, so it holds at once), a per-IP
throttle on failed authentications, and per-key rolling-window rate limits with the spec's headers.

The windows are kept by `services/api/limits.py` in this process, or shared with every gateway
on the database by `services/api/shared_limits.py`."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from infra.apikeys import ApiKey, authenticate
from services.api.errors import ApiError
from services.api.limits import Limits, Verdict
from services.api.memo import Memo

BUCKET_LIMITS = {"discount_validate": 20, "ticket_pdf": 10}
KEY_SECONDS = 60.0


class AccessControl:
    """The state the checks share within one gateway process."""

    def __init__(self, pool: asyncpg.Pool, keys: Memo[ApiKey | None], limits: Limits) -> None:
        self._pool = pool
        self._keys = keys
        self._limits = limits

    async def identify(self, request: web.Request) -> ApiKey:
        """The caller's key; raises the 401, or the 429 of a source refused for its failures."""
        source = request.remote or "unknown"
        retry = await self._limits.auth_refusal(source)
        if retry:
            raise _too_many_auth_failures(retry)
        key = await self._key_of(request)
        if key is None:
            # Only a credential that fails is an attempt: a call that sends none (a page or a
            # client not yet set up) is told so without counting toward the spray throttle.
            if request.headers.get("Authorization", "").strip():
                retry = await self._limits.auth_failed(source)
                if retry:
                    raise _too_many_auth_failures(retry)
            raise ApiError(401, "unauthorized", "missing, invalid or revoked API key")
        return key

    async def _key_of(self, request: web.Request) -> ApiKey | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        # A key is printable ASCII: anything else (bytes that are not UTF-8 arrive as lone
        # surrogates) is a failed credential like any unknown key, not a hash of it that fails.
        if scheme.lower() != "bearer" or not token or len(token) > 200 or not token.isascii():
            return None
        # Keyed by the token itself, which this process holds anyway while it serves the
        # request: hashing it again on every hit would cost more than the lookup saves.
        return await self._keys.get(token, lambda: authenticate(self._pool, token))

    async def take(self, key: ApiKey, bucket: str | None) -> Verdict:
        """Counts the request in the key's window and in its route's dedicated bucket, or in
        neither when either is full. The headers report the key's own limit, as the spec
        defines them ("the per-minute cap on your API key"), a refusal by the bucket too: its
        Retry-After says when the bucket has room."""
        windows = [(f"key:{key.id}", key.rate_limit_per_minute)]
        if bucket:
            windows.append((f"key:{key.id}:{bucket}", BUCKET_LIMITS[bucket]))
        verdict = await self._limits.take(windows)
        if not verdict.allowed:
            raise ApiError(
                429,
                "rate_limited",
                headers={
                    "Retry-After": str(verdict.retry_after),
                    "X-RateLimit-Limit": str(key.rate_limit_per_minute),
                    "X-RateLimit-Remaining": "0",
                },
            )
        return verdict


def _too_many_auth_failures(retry: int) -> ApiError:
    return ApiError(429, "too_many_auth_failures", headers={"Retry-After": str(retry)})
