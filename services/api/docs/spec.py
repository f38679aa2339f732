"""The OpenAPI 3.0 document's own types. The document is encoded from them, and describes itself
with them (GET /api/v1/openapi.json answers an `OpenApiDocument`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

REF_TEMPLATE = "#/components/schemas/{name}"
# msgspec describes dict[int, X] as an object with any keys; this is the key schema it decodes.
INT_KEY = {"type": "string", "pattern": "^-?[0-9]+$"}

JsonSchema = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="An OpenAPI 3.0 Schema Object",
        extra_json_schema={"additionalProperties": True},
    ),
]

HeaderRef = Annotated[
    dict[str, str], msgspec.Meta(description="A reference to one of components.headers")
]


class Doc(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """OpenAPI and Postman objects: optional members are left out rather than sent as null.
    A value equal to its default is never sent, so members that must always appear (or whose
    default in the format differs from ours) have no default here."""


class OpenApiInfo(Doc, kw_only=True):
    title: str
    version: str
    description: str


class OpenApiServer(Doc, kw_only=True):
    url: str
    description: str | None = None


class OpenApiTag(Doc, kw_only=True):
    name: str
    description: str | None = None


class OpenApiParameter(Doc, kw_only=True):
    name: str
    in_: Literal["path", "query", "header"] = msgspec.field(name="in")
    required: bool = False
    description: str | None = None
    schema: JsonSchema


class OpenApiHeader(Doc, kw_only=True):
    description: str
    required: bool = False
    schema: JsonSchema


class OpenApiMediaType(Doc, kw_only=True):
    schema: JsonSchema


class OpenApiResponse(Doc, kw_only=True):
    description: str
    headers: dict[str, HeaderRef] = {}
    content: dict[str, OpenApiMediaType] = {}


class OpenApiRequestBody(Doc, kw_only=True):
    required: bool = False
    content: dict[str, OpenApiMediaType]


class OpenApiOperation(Doc, kw_only=True):
    operation_id: str
    summary: str
    tags: list[str]
    parameters: list[OpenApiParameter] = []
    request_body: OpenApiRequestBody | None = None
    responses: dict[str, OpenApiResponse]
    security: list[dict[str, list[str]]] | None = None


class OpenApiSecurityScheme(Doc, kw_only=True):
    type: Literal["http"]
    scheme: Literal["bearer"]
    bearer_format: str | None = None
    description: str | None = None


class OpenApiComponents(Doc, kw_only=True):
    schemas: dict[str, JsonSchema]
    headers: dict[str, OpenApiHeader]
    security_schemes: dict[str, OpenApiSecurityScheme]


class OpenApiDocument(Doc, kw_only=True):
    openapi: Literal["3.0.3"]
    info: OpenApiInfo
    servers: list[OpenApiServer]
    tags: list[OpenApiTag]
    security: list[dict[str, list[str]]]
    paths: dict[str, dict[str, OpenApiOperation]]
    components: OpenApiComponents
