"""What the gateway's application and each request carry, under one set of keys: the pool, the
use cases, the shared caches and feeds, the caller's key and request id. The gateway fills them
in; handlers read them through the helpers below."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from infra.apikeys import ApiKey
from infra.changes import ChangeFeed
from infra.eventstore import Metadata
from infra.idempotency import Claimant
from infra.wallet.keys import HandoutKeys
from services.api.access import AccessControl
from services.api.activity import ActivityLog
from services.api.docs.published import PublishedDocs
from services.api.memo import Memo
from services.api.offers import SeatOffers
from services.api.sale_first import SaleFirst
from services.usecases.purchases import Purchases
from services.usecases.refunds import Refunds
from services.usecases.ticket_documents import Documents

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
PURCHASES: web.AppKey[Purchases] = web.AppKey("purchases", Purchases)
REFUNDS: web.AppKey[Refunds] = web.AppKey("refunds", Refunds)
DOCUMENTS: web.AppKey[Documents] = web.AppKey("documents", Documents)
HANDOUT: web.AppKey[HandoutKeys] = web.AppKey("handout", HandoutKeys)
SNAPSHOTS: web.AppKey[Memo] = web.AppKey("snapshots", Memo)
ACCESS: web.AppKey[AccessControl] = web.AppKey("access", AccessControl)
ACTIVITY: web.AppKey[ActivityLog] = web.AppKey("activity", ActivityLog)
CHANGES: web.AppKey[ChangeFeed] = web.AppKey("changes", ChangeFeed)
API_DOCS: web.AppKey[PublishedDocs] = web.AppKey("api_docs", PublishedDocs)
# The seat planner's: offers made to buyers, and each event's seat map and taken seats.
OFFERS: web.AppKey[SeatOffers] = web.AppKey("offers", SeatOffers)
PLANS: web.AppKey[Memo] = web.AppKey("seat_plans", Memo)
TAKEN: web.AppKey[Memo] = web.AppKey("taken_seats", Memo)
SALE_FIRST: web.AppKey[SaleFirst] = web.AppKey("sale_first", SaleFirst)
CLAIMANT: web.AppKey[Claimant] = web.AppKey("idempotency_claimant", Claimant)
API_KEY: web.RequestKey[ApiKey] = web.RequestKey("api_key", ApiKey)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


def request_id_of(request: web.Request) -> str:
    return request[REQUEST_ID]


def pool_of(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL]


def snapshots_of(request: web.Request) -> Memo:
    return request.app[SNAPSHOTS]


def api_key_of(request: web.Request) -> ApiKey:
    return request[API_KEY]


def organization_of(request: web.Request) -> int:
    return api_key_of(request).organization_id


def metadata_of(request: web.Request) -> Metadata:
    """What the events a partner's request appends record of it; the request starts a chain
    that what workers append in reaction carries on (its correlation id)."""
    request_id = request_id_of(request)
    key = api_key_of(request)
    return Metadata(
        request_id=request_id, api_key_id=key.id, actor="partner-api", correlation_id=request_id
    )


def public_base(request: web.Request) -> str:
    """Where links handed out point: the configured public address, else the one `request`
    came to."""
    return (request.app[HANDOUT].public_url or str(request.url.origin())).rstrip("/")


def now() -> datetime:
    return datetime.now(UTC)
