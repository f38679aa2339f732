"""The partner API's error envelope. Handlers raise ApiError; the request middleware turns it
(and anything unexpected) into `{"error": code, "detail": ...}` with the spec's status."""

from __future__ import annotations

import msgspec
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


def invalid_request(field: str, detail: str) -> ApiError:
    """422 naming the field, the way every bad query, path or body parameter is reported."""
    return ApiError(422, "invalid_request", f"{field}: {detail}")


def not_found(what: str = "resource") -> ApiError:
    """The same 404 for missing, draft and other organizations' objects."""
    return ApiError(404, "not_found", f"{what} not found")


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
