"""The documents of one gateway's route table. The gateway hands its routes in (this package
never imports it), and the documents are built on first request: that takes msgspec's schemas
of every payload, and most processes are never asked."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from services.api.docs.openapi import openapi_document
from services.api.docs.postman import PostmanCollection, postman_collection
from services.api.docs.spec import OpenApiDocument
from services.api.routes import Route


class PublishedDocs:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = tuple(routes)

    @functools.cached_property
    def openapi(self) -> OpenApiDocument:
        return openapi_document(self._routes)

    def postman(self, base_url: str) -> PostmanCollection:
        """The collection for clients of `base_url` (this gateway's origin as they reach it)."""
        return postman_collection(self.openapi, base_url)
