"""The partner API's error envelope. Handlers raise ApiError; the request middleware turns it
(and anything unexpected) into `{"error": code, "detail": ...}` with the spec's status."""

from __future__ import annotations

import socket

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
from aiohttp import web

from domain.errors import DomainError


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    error: str
    detail: str | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail or ''}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.detail, self.headers)


def invalid_request(field: str, detail: str) -> ApiError:
    """422 naming the field, the way every bad query, path or body parameter is reported."""
    return ApiError(422, "invalid_request", f"{field}: {detail}")


def not_found(what: str = "resource") -> ApiError:
    """The same 404 for missing, draft and other organizations' objects."""
    return ApiError(404, "not_found", f"{what} not found")


# Seconds a client is asked to wait when the database or NATS cannot be reached.
RETRY_AFTER_UNAVAILABLE = 5
# What a lost or refused connection to PostgreSQL or NATS raises: the request may well succeed
# a few seconds later, so the answer is 503 with Retry-After rather than 500.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted
    TimeoutError,  # a connect or a pool acquire that timed out; nats' own TimeoutError too
    socket.gaierror,
    asyncpg.PostgresConnectionError,  # class 08, e.g. the connection closed mid-query
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    # A connection a server going down left mid-exchange: "cannot switch to state 12; another
    # operation (2) is in progress" from the pool's next query on it (seen in a fast stop).
    asyncpg.exceptions.InternalClientError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says PostgreSQL or NATS is out of reach."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, _UNAVAILABLE) or type(current) is OSError:
            return True  # a plain OSError: unreachable network, or asyncpg's "Multiple exceptions"
        if isinstance(current, asyncpg.InterfaceError) and "clos" in str(current):
            return True  # the pool or the connection is closed ("is closing", "is closed")
        current = current.__cause__
        seen += 1
    return False


def service_unavailable(
    detail: str = "a backing service cannot be reached; try again shortly",
    retry_after: int = RETRY_AFTER_UNAVAILABLE,
) -> ApiError:
    return ApiError(503, "service_unavailable", detail, {"Retry-After": str(retry_after)})


# Seconds a client is asked to wait after its change lost to others on the same stream every
# time it was tried: contention passes in moments, an outage takes longer.
RETRY_AFTER_CONTENDED = 1
# A command that kept losing to concurrent writers of the same stream (every attempt found it
# moved, nothing of it stored): worth trying again at once, not a server fault.
CONTENDED = "too many changes to the same resource at once; nothing was stored, try again"


_DOMAIN_STATUS = {
    "not_found": 404,
    "invalid_request": 422,
    "invalid_discount_code": 422,
    "stripe_error": 502,
    "payment_processing_unavailable": 503,
}


def from_domain(exc: DomainError) -> ApiError:
    status = _DOMAIN_STATUS.get(exc.code, 409)
    detail = f"{exc.field}: {exc.detail}" if exc.field and status == 422 else exc.detail
    return ApiError(status, exc.code, detail)


def error_response(
    status: int, code: str, detail: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(ErrorBody(error=code, detail=detail)),
        content_type="application/json",
        headers=headers,
    )
