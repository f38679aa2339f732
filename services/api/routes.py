"""The partner API's route table: each route names its handler and the msgspec types of its
query, body and response, so the OpenAPI document and the Postman collection are generated
from the same types the handlers decode and encode with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from services.api.sale_first import Lane

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The versioned partner API: what the OpenAPI document covers and the activity log records.
API_PREFIX = "/api/v1/"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    response: Any = None
    status: int = 200
    query: Any = None
    body: Any = None
    errors: tuple[int, ...] = ()
    authenticated: bool = True
    bucket: str | None = None
    media_type: str = "application/json"
    path_params: dict[str, type] = field(default_factory=dict)
    lane: Lane = "free"
    # Takes an Idempotency-Key: a retry with it gets the first answer (services/api/idempotent.py).
    idempotent: bool = False

    @property
    def operation_id(self) -> str:
        return self.handler.__name__
