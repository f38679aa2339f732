"""The documentation's routes, all public: the OpenAPI document and the Postman collection of
the gateway's own route table (see `published`), and the HTML page with the Redoc bundle it
loads (see `page`)."""

from __future__ import annotations

from aiohttp import web

from services.api.context import API_DOCS
from services.api.docs.page import (
    BUNDLE_PATH,
    CONTENT_SECURITY_POLICY,
    OPENAPI_PATH,
    PAGE,
    PAGE_PATH,
    POSTMAN_PATH,
    REDOC_BUNDLE,
)
from services.api.docs.postman import PostmanCollection
from services.api.docs.spec import OpenApiDocument
from services.api.http import cached_json
from services.api.routes import Route

DOCS_TAG = "Documentation"


async def openapi_json(request: web.Request) -> web.Response:
    return cached_json(request, request.app[API_DOCS].openapi)


async def postman_json(request: web.Request) -> web.Response:
    base_url = f"{request.scheme}://{request.host}"
    return cached_json(request, request.app[API_DOCS].postman(base_url))


async def api_docs(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE,
        content_type="text/html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


async def redoc_bundle(request: web.Request) -> web.FileResponse:
    """Sent from the file with its ETag and Last-Modified, so a browser revalidates it with a
    bodyless 304 rather than fetching 1 MB again."""
    return web.FileResponse(
        REDOC_BUNDLE,
        headers={
            "Content-Type": "text/javascript; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


ROUTES: list[Route] = [
    Route(
        "GET",
        OPENAPI_PATH,
        openapi_json,
        "OpenAPI 3.0 document of this API",
        DOCS_TAG,
        OpenApiDocument,
        authenticated=False,
    ),
    Route(
        "GET",
        POSTMAN_PATH,
        postman_json,
        "Postman v2.1 collection of this API",
        DOCS_TAG,
        PostmanCollection,
        authenticated=False,
    ),
    Route(
        "GET",
        PAGE_PATH,
        api_docs,
        "HTML documentation",
        DOCS_TAG,
        media_type="text/html",
        authenticated=False,
    ),
    Route(
        "GET",
        BUNDLE_PATH,
        redoc_bundle,
        "Redoc, the HTML documentation's renderer",
        DOCS_TAG,
        media_type="text/javascript",
        authenticated=False,
    ),
]
