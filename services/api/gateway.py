"""The aiohttp gateway: the partner API's routes behind one middleware that gives every request
its id, its caller, its rate-limit headers, its activity-log row and the JSON error envelope."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestPayloadError

from domain.errors import DomainError
from infra.apikeys import DEFAULT_RATE_LIMIT
from infra.changes import API_KEYS, ChangeFeed, read_model_channel
from infra.embed_tokens import EmbedSigner
from infra.eventstore import ConcurrencyError
from infra.idempotency import Claimant
from infra.metrics import observe_request
from infra.offer_feed import OfferFeed
from infra.rate_limits import AUTH_BLOCKS
from infra.wallet.keys import HandoutKeys
from projections.availability import AvailabilityProjection
from projections.catalog import CatalogProjection
from services.api import (
    attendee_pages,
    availability,
    catalog_reads,
    deliveries,
    embeds,
    etickets,
    pricing,
    purchases,
    refunds,
    seating,
    ticket_resource,
    tickets,
    transfers,
    wallet,
    webhooks,
)
from services.api.access import KEY_SECONDS, AccessControl
from services.api.activity import ActivityEntry, ActivityLog
from services.api.context import (
    ACCESS,
    ACTIVITY,
    API_DOCS,
    API_KEY,
    CHANGES,
    CLAIMANT,
    DOCUMENTS,
    HANDOUT,
    OFFERS,
    PLANS,
    POOL,
    PURCHASES,
    REFUNDS,
    REQUEST_ID,
    SALE_FIRST,
    SNAPSHOTS,
    TAKEN,
)
from services.api.docs import endpoints as docs
from services.api.docs.published import PublishedDocs
from services.api.errors import (
    CONTENDED,
    RETRY_AFTER_CONTENDED,
    ApiError,
    error_response,
    from_domain,
    service_unavailable,
    unavailable,
)
from services.api.forwarded import Network, behind_proxies
from services.api.http import check_text, read_in_time
from services.api.limits import Limits, LocalLimits, Verdict
from services.api.memo import Memo
from services.api.offers import SeatOffers
from services.api.routes import API_PREFIX, Handler, Route
from services.api.sale_first import SaleFirst
from services.api.shared_limits import SharedLimits
from services.health import Readiness, add_health_routes, add_metrics_route
from services.usecases.purchases import Purchases
from services.usecases.refunds import Refunds
from services.usecases.ticket_documents import Documents

log = structlog.get_logger(__name__)

REQUEST_ID_MAX = 128
SLOW_REQUEST_MS = 1000.0
_random = random.Random()
ROUTES: dict[Handler, Route] = {}
# Read answers may lag the read models by at most this (for what depends on the clock, such as
# an event's status); a change to the read models ends them at once.
SNAPSHOT_SECONDS = 1.0
# The read models the memoized answers are built from.
CATALOG_CHANGES = read_model_channel(CatalogProjection.name)
AVAILABILITY_CHANGES = read_model_channel(AvailabilityProjection.name)
READS_FOLLOW = (CATALOG_CHANGES, AVAILABILITY_CHANGES)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
# What aiohttp's HTTP parser accepts: a request line (the URL) and one header line. They differ
# so that the parser's LineTooLong, which names only the limit it hit, tells which was too long.
MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 8190
# The header block in all, each line counted with its ": " and line break.
HEADERS_MAX = 8192
# What a request whose caller hung up is counted as (nginx's convention): a 4xx, not an outage.
CLIENT_CLOSED = 499


def new_request_id() -> str:
    """A random (version 4) UUID. A request id correlates log lines and events and guards no
    secret, so it comes from the fast generator, not from os.urandom as uuid4's does: that and
    the UUID object cost more than a cached read of availability."""
    value = _random.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)
    value = value & ~(0xC << 60) | (0x8 << 60)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def request_id_for(request: web.Request) -> str:
    """The caller's own X-Request-ID (capped, printable) or a fresh UUID."""
    given = request.headers.get("X-Request-ID", "").strip()
    if given and given.isprintable():
        return given[:REQUEST_ID_MAX]
    return new_request_id()


async def _respond(
    request: web.Request, handler: Handler, route: Route | None
) -> tuple[web.StreamResponse, Verdict | None]:
    verdict = None
    try:
        _check_header_block(request)
        if route.authenticated if route is not None else _unrouted_call_with_a_key(request):
            access = request.app[ACCESS]
            # The key is the request's before its limit is checked: a call refused for its
            # rate is in the key's activity log too.
            key = request[API_KEY] = await access.identify(request)
            verdict = await access.take(key, route.bucket if route is not None else None)
        _check_request(request, route)
        await read_in_time(request)
        if route is None or route.lane == "free":
            return await handler(request), verdict
        async with request.app[SALE_FIRST].lane(route.lane):
            return await handler(request), verdict
    except ApiError as exc:
        return exc.response(), verdict
    except DomainError as exc:
        return from_domain(exc).response(), verdict
    except ConcurrencyError as exc:
        log.warning("request_contended", stream=exc.stream_id, path=request.path)
        return service_unavailable(CONTENDED, RETRY_AFTER_CONTENDED).response(), verdict
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(exc.status, "invalid_request")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, exc.reason, headers), verdict
    except RequestPayloadError as exc:  # a body its Content-Encoding or chunking cannot decode
        return error_response(400, "bad_request", f"malformed request body: {exc}"), verdict
    except Exception as exc:
        if request.transport is None or request.transport.is_closing():
            # The caller hung up (mid-body, say): no outage, and no one to answer.
            log.info("request_abandoned", error=repr(exc), path=request.path)
            return error_response(CLIENT_CLOSED, "client_closed_request"), verdict
        if unavailable(exc):
            log.warning("request_unavailable", error=repr(exc), path=request.path)
            return service_unavailable().response(), verdict
        log.exception("request_failed", method=request.method, path=request.path)
        return error_response(500, "internal_error"), verdict


def _answered_already(record: logging.LogRecord) -> bool:
    """aiohttp reads what is left of a body once the handler answered: a body its
    Content-Encoding cannot decode fails again there and would be logged as an unhandled
    error with a traceback, though the gateway answered it 400 (`_respond`)."""
    return not (record.exc_info and isinstance(record.exc_info[1], RequestPayloadError))


def _unrouted_call_with_a_key(request: web.Request) -> bool:
    """A call to no route of the API (a wrong path or method) that sends a credential: it is
    the key's call like any other, counted, answered with the key's own limit and in its
    organization's activity log; a bad credential is a 401 and counts as a failure."""
    return request.path.startswith(API_PREFIX) and bool(
        request.headers.get("Authorization", "").strip()
    )


def _check_header_block(request: web.Request) -> None:
    """Headers over HEADERS_MAX bytes in all: aiohttp's parser limits each line and their
    number, not their sum (eight lines of 6,000 bytes were taken)."""
    if sum(len(name) + len(value) + 4 for name, value in request.raw_headers) > HEADERS_MAX:
        raise ApiError(431, "headers_too_large", f"the headers are over {HEADERS_MAX} bytes")


def _check_request(request: web.Request, route: Route | None) -> None:
    """What no handler should have to check: path parameters that cannot be stored (a NUL
    reaching a query would fail it with a 500) and, on an endpoint that reads a JSON body, a
    body declared as another media type (issue 9: a `text/plain` purchase was taken). A body
    sent with no Content-Type at all is read as JSON; one that is not JSON is the handler's
    422."""
    for name, value in request.match_info.items():
        check_text(name, value)
    if route is None or route.body is None or not request.body_exists:
        return  # no body: the handler decides whether one is required
    if hdrs.CONTENT_TYPE not in request.headers:
        return
    media = request.content_type
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")


@web.middleware
async def observe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times every request by its route's pattern, never its path: one series per
    endpoint, not one per ticket code or purchase token."""
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    method = request.method if request.method in hdrs.METH_ALL else "other"
    observe_request(route, method, response.status, time.perf_counter() - started)
    return response


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request, matched or not, leaves with X-Request-ID, the JSON envelope on failure,
    one log line and one activity-log row (written later, in batches)."""
    started = time.perf_counter()
    request_id = request_id_for(request)
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        route = ROUTES.get(request.match_info.route.handler)
        response, verdict = await _respond(request, handler, route)
        response.headers["X-Request-ID"] = request_id
        if request.path.startswith(API_PREFIX) and "X-RateLimit-Limit" not in response.headers:
            limit = verdict.limit if verdict else DEFAULT_RATE_LIMIT
            remaining = verdict.remaining if verdict else DEFAULT_RATE_LIMIT
            response.headers["X-RateLimit-Limit"] = str(limit)
            response.headers["X-RateLimit-Remaining"] = str(remaining)
        _record(request, response.status, (time.perf_counter() - started) * 1000)
        return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


def _record(request: web.Request, status: int, duration_ms: float) -> None:
    """Every API call goes to the activity log. The log gets a line at `info` for a refused,
    failed or slow request; a plain success only at `debug`, as the activity log has it already
    and a line per request costs a read as much as answering it."""
    key = request.get(API_KEY)
    noteworthy = status >= 400 or duration_ms >= SLOW_REQUEST_MS
    (log.info if noteworthy else log.debug)(
        "request",
        method=request.method,
        path=request.path,
        status=status,
        duration_ms=round(duration_ms, 2),
        api_key_id=key.id if key else None,
    )
    if not request.path.startswith(API_PREFIX):
        return
    request.app[ACTIVITY].record(
        ActivityEntry(
            recorded_at=datetime.now(UTC),
            organization_id=key.organization_id if key else None,
            api_key_id=key.id if key else None,
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=duration_ms,
            request_id=request[REQUEST_ID],
            remote=request.remote,
        )
    )


def partner_routes() -> Iterable[Route]:
    yield from catalog_reads.ROUTES
    yield from availability.ROUTES
    yield from seating.ROUTES
    yield from pricing.ROUTES
    yield from purchases.ROUTES
    yield from deliveries.ROUTES
    yield from refunds.ROUTES
    yield from webhooks.ROUTES
    yield from ticket_resource.ROUTES
    yield from tickets.ROUTES
    yield from transfers.ROUTES
    yield from docs.ROUTES
    yield from attendee_pages.ROUTES
    yield from wallet.ROUTES
    yield from etickets.ROUTES
    yield from embeds.ROUTES


async def _start(app: web.Application) -> None:
    app[CHANGES].start()
    await app[OFFERS].start()
    app[SALE_FIRST].start()
    await app[CLAIMANT].start()


async def _stop(app: web.Application) -> None:
    await app[CLAIMANT].stop()
    await app[SALE_FIRST].stop()
    await app[OFFERS].stop()
    await app[CHANGES].stop()


def create_app(
    pool: asyncpg.Pool,
    activity: ActivityLog,
    sales: Purchases,
    documents: Documents,
    offer_feed: OfferFeed | None = None,
    readiness: Readiness | None = None,
    handout: HandoutKeys | None = None,
    embed_signer: EmbedSigner | None = None,
    share_limits: bool = False,
    trusted_proxies: Sequence[Network] = (),
) -> web.Application:
    """`offer_feed`: seat offers shared with the other gateways (none: kept to this one).
    `readiness`: what /readyz checks (none: the database only). `handout`: the keys of
    e-ticket links and wallet passes (none: development ones, in memory). `embed_signer`: the
    embed tokens' (none: a development one, in memory). `share_limits`: rate limits and the
    auth-failure throttle held with every gateway on the database (False: by this one alone).
    `trusted_proxies`: load balancers whose X-Forwarded-For names the client (none: the peer is)."""
    middlewares = [observe_requests, request_context]
    if trusted_proxies:
        middlewares.insert(0, behind_proxies(trusted_proxies))
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    changes = ChangeFeed(pool, (*READS_FOLLOW, API_KEYS, AUTH_BLOCKS))
    app[POOL] = pool
    app[CHANGES] = changes
    app[SNAPSHOTS] = Memo(changes, READS_FOLLOW, ttl=SNAPSHOT_SECONDS)
    app[OFFERS] = SeatOffers(offer_feed)
    app[SALE_FIRST] = SaleFirst()
    app[CLAIMANT] = Claimant(pool)
    app[PLANS] = Memo(changes, (CATALOG_CHANGES,), ttl=SNAPSHOT_SECONDS)
    logging.getLogger("aiohttp.server").addFilter(_answered_already)
    app[TAKEN] = Memo(changes, (AVAILABILITY_CHANGES,), ttl=SNAPSHOT_SECONDS)
    limits: Limits = LocalLimits()
    if share_limits:
        limits = shared = SharedLimits(pool, changes)
        app.cleanup_ctx.append(shared.purging)
    app[ACCESS] = AccessControl(pool, Memo(changes, (API_KEYS,), ttl=KEY_SECONDS), limits)
    app[ACTIVITY] = activity
    app[PURCHASES] = sales
    app[REFUNDS] = Refunds(sales)
    sales.catalog.follow(changes, CATALOG_CHANGES)
    app[DOCUMENTS] = documents
    app[HANDOUT] = handout or HandoutKeys.development()
    embeds.install(app, embed_signer or EmbedSigner.development())
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    checks = readiness or Readiness(pool)
    add_health_routes(app, checks)
    add_metrics_route(app, checks)
    routes = list(partner_routes())
    app[API_DOCS] = PublishedDocs(routes)
    for route in routes:
        ROUTES[route.handler] = route
        app.router.add_route(route.method, route.path, route.handler)
        if route.method == "GET":  # RFC 9110: GET's headers without its body
            app.router.add_route("HEAD", route.path, route.handler)
    return app


def _parser_error(status: int, exc: BaseException | None) -> tuple[int, str, str | None]:
    """Status, code and detail for a request aiohttp's parser refused."""
    if isinstance(exc, LineTooLong):
        if exc.args[1] == MAX_URL_BYTES:
            return 414, "uri_too_long", f"the request line is over {MAX_URL_BYTES} bytes"
        return 431, "headers_too_large", f"a header line is over {MAX_HEADER_BYTES} bytes"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
        return 431, "headers_too_large", "too many headers"
    if isinstance(exc, HttpProcessingError):
        return 400, "bad_request", "malformed HTTP request"
    if status == 500:
        return 500, "internal_error", None
    return status, "request_failed", None


class _Protocol(web.RequestHandler):
    """Answers what never reaches the middleware (a URL or a header over the limit, a
    malformed request, which aiohttp's parser refuses first) with the JSON envelope and an
    X-Request-ID, instead of aiohttp's bare text."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)  # raises: too late
        status, code, detail = _parser_error(status, exc)
        request_id = new_request_id()
        if status == 500:
            log.error("request_failed", request_id=request_id, exc_info=exc)
        else:
            log.info("request_refused", status=status, error=code, request_id=request_id)
        # No key could be read: the headers every answer carries, with the default limit, as
        # for any other request without one.
        limit = str(DEFAULT_RATE_LIMIT)
        headers = {
            "X-Request-ID": request_id,
            "X-RateLimit-Limit": limit,
            "X-RateLimit-Remaining": limit,
        }
        response = error_response(status, code, detail, headers)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """The AppRunner the gateway is served with: aiohttp's own with the parser's limits set
    and its protocol errors answered as the API answers every other error (aiohttp has no
    public hook for these, so the server it builds is rebuilt around `_Protocol`)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_URL_BYTES)
        kwargs.setdefault("max_field_size", MAX_HEADER_BYTES)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **made._kwargs,
        )
