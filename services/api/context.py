"""What a handler needs from its request: the pool, the caller's organization and the
process's memoized read answers."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from infra.apikeys import ApiKey
from services.api.memo import Memo
from services.usecases.purchases import Purchases
from services.usecases.ticket_documents import Documents

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
PURCHASES: web.AppKey[Purchases] = web.AppKey("purchases", Purchases)
DOCUMENTS: web.AppKey[Documents] = web.AppKey("documents", Documents)
SNAPSHOTS: web.AppKey[Memo] = web.AppKey("snapshots", Memo)
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


def now() -> datetime:
    return datetime.now(UTC)
