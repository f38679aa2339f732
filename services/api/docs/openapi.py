"""The OpenAPI 3.0 document of a route table: schemas from the same msgspec types the handlers
decode and encode with, statuses and headers from what the gateway does for each route. It
covers every route under /api/v1/ (the HTML page lives outside the versioned API and is not an
operation)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from importlib import metadata
from typing import Any

import msgspec
import msgspec.inspect as mi

from services.api.docs.error_table import error_description, error_schema, error_statuses
from services.api.docs.schema30 import schema_30
from services.api.docs.spec import (
    INT_KEY,
    REF_TEMPLATE,
    HeaderRef,
    OpenApiComponents,
    OpenApiDocument,
    OpenApiHeader,
    OpenApiInfo,
    OpenApiMediaType,
    OpenApiOperation,
    OpenApiParameter,
    OpenApiRequestBody,
    OpenApiResponse,
    OpenApiSecurityScheme,
    OpenApiServer,
    OpenApiTag,
)
from services.api.errors import ErrorBody
from services.api.routes import API_PREFIX, Route

TITLE = "linjerum Partner API"
MAX_PATH_INT = 10**18 - 1  # services.api.http.path_int accepts at most 18 digits

DESCRIPTION = """\
A headless ticketing API for partners building their own ticket-buying frontends.

Authenticate every call with your API key as a bearer token: `Authorization: Bearer tk_live_...`.
This document, the Postman collection and the HTML documentation are public.

Every response under /api/v1/ carries `X-Request-ID` (send your own to have it echoed back),
`X-RateLimit-Limit` and `X-RateLimit-Remaining`; a 429 also carries `Retry-After`. Errors are
`{"error": code, "detail"?: text}`: branch on `error`, never on `detail`. Polling endpoints
answer with an `ETag` and a bodyless 304 when `If-None-Match` matches it.

Timestamps are ISO-8601 in UTC, money is in the smallest currency unit, ids are integers."""

HEADERS: dict[str, OpenApiHeader] = {
    "X-Request-ID": OpenApiHeader(
        description="UUID of this request, or the X-Request-ID you sent (echoed back)",
        required=True,
        schema={"type": "string", "minLength": 1, "maxLength": 128},
    ),
    "X-RateLimit-Limit": OpenApiHeader(
        description="The per-minute cap that applies to this request",
        required=True,
        schema={"type": "integer", "minimum": 1},
    ),
    "X-RateLimit-Remaining": OpenApiHeader(
        description="Requests left in the current 60-second window",
        required=True,
        schema={"type": "integer", "minimum": 0},
    ),
    "Retry-After": OpenApiHeader(
        description="Seconds until the earliest safe retry",
        required=True,
        schema={"type": "integer", "minimum": 1},
    ),
    "Idempotent-Replay": OpenApiHeader(
        description="`true` when this answer is the stored one of an earlier request with the"
        " same Idempotency-Key and body, not a new decision",
        required=False,
        schema={"type": "string", "enum": ["true"]},
    ),
    "ETag": OpenApiHeader(
        description="Strong validator of the body; send it back as If-None-Match",
        required=True,
        schema={"type": "string", "minLength": 2},
    ),
}


def documented(route: Route) -> bool:
    """Operations are the versioned API; /api-docs (HTML for people) is not one."""
    return route.path.startswith(API_PREFIX)


def uses_etag(route: Route) -> bool:
    """A handler that answers with a snapshot sends an ETag and honours If-None-Match."""
    code = getattr(inspect.unwrap(route.handler), "__code__", None)
    names = set(code.co_names) if code is not None else set()
    return route.method == "GET" and bool(names & {"cached_json", "snapshot"})


def replayable(status: int) -> bool:
    """An answer an Idempotency-Key keeps and replays: a refusal too, but neither one before
    the key is looked at (401) nor one that means "try again" (429, 5xx)."""
    return status not in (401, 429) and status < 500


def _headers(status: int, route: Route) -> dict[str, HeaderRef]:
    """References to the response headers the gateway sets for this status of this route."""
    names = ["X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining"]
    if status == 429:
        names.append("Retry-After")
    if status in (route.status, 304) and uses_etag(route):
        names.append("ETag")
    if route.idempotent and replayable(status):
        names.append("Idempotent-Replay")
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _path_schema(kind: type, components: dict[str, Any]) -> dict[str, Any]:
    if kind is int:
        return {"type": "integer", "minimum": 1, "maximum": MAX_PATH_INT}
    if kind is str:
        return {"type": "string", "minLength": 1}
    (schema,), found = msgspec.json.schema_components([kind], ref_template=REF_TEMPLATE)
    components.update(found)
    return schema_30(schema)


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is absent, never the JSON `null` it is decoded to."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if schema.get("default") is not None:
        rest["default"] = schema["default"]
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


def _query_parameters(query: type, schema: dict[str, Any]) -> list[OpenApiParameter]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    parameters = []
    for field in msgspec.structs.fields(query):
        field_schema = _non_null(dict(properties[field.encode_name]))
        description = field_schema.pop("description", None)
        parameters.append(
            OpenApiParameter(
                name=field.encode_name,
                in_="query",
                required=field.encode_name in required,
                description=description,
                schema=schema_30(field_schema),
            )
        )
    return parameters


def _operation(
    route: Route, components: dict[str, Any], query_schemas: dict[type, dict[str, Any]]
) -> OpenApiOperation:
    parameters = [
        OpenApiParameter(
            name=name, in_="path", required=True, schema=_path_schema(kind, components)
        )
        for name, kind in route.path_params.items()
    ]
    if route.query is not None:
        parameters += _query_parameters(route.query, query_schemas[route.query])
    parameters.append(
        OpenApiParameter(
            name="X-Request-ID",
            in_="header",
            description="Your own id for this request, echoed back in the response header",
            schema={"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[ -~]+$"},
        )
    )
    if route.idempotent:
        parameters.append(
            OpenApiParameter(
                name="Idempotency-Key",
                in_="header",
                description="Retry-safe: a retry with the same key and body gets the first"
                " answer (kept 24 hours per API key)",
                schema={"type": "string", "minLength": 1, "maxLength": 255},
            )
        )
    if uses_etag(route):
        parameters.append(
            OpenApiParameter(
                name="If-None-Match",
                in_="header",
                description="The ETag of the body you have; a match is answered with 304",
                schema={"type": "string"},
            )
        )
    body = None
    if route.body is not None:
        body = OpenApiRequestBody(
            required=True,
            content={
                "application/json": OpenApiMediaType(
                    schema={"$ref": REF_TEMPLATE.format(name=_name(route.body, components))}
                )
            },
        )
    responses = {str(route.status): _success(route, components)}
    if uses_etag(route):
        responses["304"] = OpenApiResponse(
            description="Not modified: the ETag sent in If-None-Match still matches",
            headers=_headers(304, route),
        )
    for status in error_statuses(route):
        responses[str(status)] = OpenApiResponse(
            description=error_description(status, route),
            headers=_headers(status, route),
            content={"application/json": OpenApiMediaType(schema=error_schema(status, route))},
        )
    return OpenApiOperation(
        operation_id=route.operation_id,
        summary=route.summary,
        tags=[route.tag],
        parameters=parameters,
        request_body=body,
        responses=responses,
        security=None if route.authenticated else [],
    )


def _name(kind: Any, components: dict[str, Any]) -> str:
    """The component name msgspec gave a Struct (its class name unless two collide)."""
    (ref,), _ = msgspec.json.schema_components([kind], ref_template=REF_TEMPLATE)
    name = ref["$ref"].rsplit("/", 1)[1]
    assert name in components, name
    return name


def _success(route: Route, components: dict[str, Any]) -> OpenApiResponse:
    content: dict[str, OpenApiMediaType] = {}
    if route.media_type in ("application/pdf", "application/vnd.apple.pkpass"):
        content[route.media_type] = OpenApiMediaType(schema={"type": "string", "format": "binary"})
    elif route.response is not None:
        name = _name(route.response, components)
        content[route.media_type] = OpenApiMediaType(
            schema={"$ref": REF_TEMPLATE.format(name=name)}
        )
    return OpenApiResponse(
        description=HTTPStatus(route.status).phrase,
        headers=_headers(route.status, route),
        content=content,
    )


def _version() -> str:
    try:
        return metadata.version("linjerum")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _mark_int_keys(types: Iterable[Any], components: dict[str, Any]) -> None:
    """msgspec describes dict[int, X] as an object with any keys, but decoding accepts integer
    keys only: say so with propertyNames, so clients (and fuzzers) send what is accepted."""
    seen: set[type] = set()

    def visit(info: mi.StructType) -> None:
        if info.cls in seen:
            return
        seen.add(info.cls)
        component = components.get(info.cls.__name__, {})
        if component.get("title") != info.cls.__name__:
            return
        for field in info.fields:
            walk(field.type, component.get("properties", {}).get(field.encode_name, {}))

    def walk(info: mi.Type, schema: dict[str, Any]) -> None:
        if isinstance(info, mi.Metadata):
            walk(info.type, schema)
        elif isinstance(info, mi.StructType):
            visit(info)
        elif isinstance(info, mi.DictType):
            key = info.key_type.type if isinstance(info.key_type, mi.Metadata) else info.key_type
            if isinstance(key, mi.IntType) and schema.get("type") == "object":
                schema["propertyNames"] = dict(INT_KEY)
            walk(info.value_type, schema.get("additionalProperties", {}))
        elif isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            walk(info.item_type, schema.get("items", {}))
        elif isinstance(info, mi.UnionType):
            for member in info.types:
                for option in schema.get("anyOf", [schema]):
                    walk(member, option)

    for info in mi.multi_type_info(list(types)):
        walk(info, {})


def openapi_document(routes: Iterable[Route]) -> OpenApiDocument:
    """The OpenAPI 3.0 document of the given routes (the ones under /api/v1/)."""
    routes = [route for route in routes if documented(route)]
    bodies = [r.response for r in routes if r.response is not None]
    bodies += [r.body for r in routes if r.body is not None]
    queries = list(dict.fromkeys(r.query for r in routes if r.query is not None))
    types = list(dict.fromkeys([ErrorBody, *bodies]))
    refs, components = msgspec.json.schema_components([*types, *queries], ref_template=REF_TEMPLATE)
    _mark_int_keys([*types, *queries], components)
    query_schemas = {}
    for query, ref in zip(queries, refs[len(types) :], strict=True):
        name = ref["$ref"].rsplit("/", 1)[1]
        query_schemas[query] = components.pop(name)
    paths: dict[str, dict[str, OpenApiOperation]] = {}
    for route in routes:
        operation = _operation(route, components, query_schemas)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    tags = list(dict.fromkeys(route.tag for route in routes))
    return OpenApiDocument(
        openapi="3.0.3",
        info=OpenApiInfo(title=TITLE, version=_version(), description=DESCRIPTION),
        servers=[OpenApiServer(url="/", description="This gateway; paths include /api/v1")],
        tags=[OpenApiTag(name=tag) for tag in tags],
        security=[{"bearerAuth": []}],
        paths=paths,
        components=OpenApiComponents(
            schemas={name: schema_30(components[name]) for name in sorted(components)},
            headers=HEADERS,
            security_schemes={
                "bearerAuth": OpenApiSecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="tk_live_...",
                    description="Partner API key from Settings → API",
                )
            },
        ),
    )


def operations(document: OpenApiDocument) -> Iterator[tuple[str, str, OpenApiOperation]]:
    """(method, path, operation) in document order."""
    for path, methods in document.paths.items():
        for method, operation in methods.items():
            yield method.upper(), path, operation
