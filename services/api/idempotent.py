"""Idempotency-Key for the POSTs that must not happen twice (a purchase, a refund): the first
request claims the key (infra/idempotency.py), a retry with the same body replays its stored
answer with `Idempotent-Replay: true`, another body under the key is a 422, a retry while the
first still runs a 409. Answers that mean "try again" are not stored. A retry of a request whose
gateway process died before answering, or that failed after it may have stored something (an
outage, an unexpected error), runs again with the claim the first one had (its `reserved`
value), so the handler finds what the first one stored instead of buying twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from domain.errors import DomainError
from infra import idempotency
from services.api.context import CLAIMANT, api_key_of, pool_of
from services.api.errors import ApiError, from_domain, invalid_request


def _retryable(response: web.Response) -> bool:
    """Responses that mean "try again" are not kept for replay (an in-flight 409 never gets
    this far: it is answered before the key is claimed)."""
    return response.status == 429 or response.status >= 500


# Failures after which nothing the request did stays: a payment that could not be started, its
# hold released.
_NOTHING_STORED = frozenset({"stripe_error", "payment_processing_unavailable"})


def _nothing_stored(response: web.Response) -> bool:
    """The retry may start afresh. After any other failure (an outage, an unexpected error)
    the request may have stored its purchase or refund before it failed."""
    assert isinstance(response.body, bytes)
    try:
        code = msgspec.json.decode(response.body, type=_Failure).error
    except msgspec.DecodeError:
        return False
    return code in _NOTHING_STORED


class _Failure(msgspec.Struct):
    error: str = ""


async def once(
    request: web.Request,
    raw: bytes,
    respond: Callable[[idempotency.Claim | None], Awaitable[web.Response]],
) -> web.Response:
    """`respond`'s answer, or with an Idempotency-Key the first answer given for it; `respond`
    is given the key's claim (None without a key)."""
    key_header = request.headers.get("Idempotency-Key")
    if key_header is None:
        return await respond(None)
    if not idempotency.valid_key(key_header):
        raise invalid_request("Idempotency-Key", idempotency.KEY_RULE)
    claimant = request.app[CLAIMANT]
    api_key = api_key_of(request).id
    fingerprint = idempotency.request_hash(request.method, request.path, raw)
    try:
        claimed = await idempotency.claim(
            pool_of(request), claimant.name, api_key, key_header, fingerprint
        )
    except idempotency.KeyReused:
        raise ApiError(
            422, "idempotency_key_reuse", "the key was used for another request"
        ) from None
    except idempotency.StillRunning:
        raise ApiError(409, "idempotency_in_flight", "the first request is still running") from None
    if isinstance(claimed, idempotency.Replay):
        return web.Response(
            status=claimed.status,
            body=claimed.body,
            content_type="application/json",
            headers={"Idempotent-Replay": "true"},
        )
    try:
        try:
            response = await respond(claimed)
        except ApiError as exc:
            response = exc.response()
        except DomainError as exc:  # a refusal is an answer like any other: kept for replay
            response = from_domain(exc).response()
    except BaseException:
        await claimant.release(api_key, key_header)
        raise
    if _nothing_stored(response):
        await claimant.abandon(api_key, key_header)
    elif _retryable(response):
        await claimant.release(api_key, key_header)
    else:
        await claimant.finish(api_key, key_header, response.status, response.body)
    return response
