"""Public API documentation generated from the route table: the OpenAPI 3.1 document (schemas
from the same msgspec types the handlers decode and encode with), a Postman v2.1 collection and
a self-contained HTML page, all public and all offline (no CDN, no external script or font).

The document covers every route under /api/v1/ (the HTML page itself lives outside the
versioned API and is not an operation). It is built once, on first request, from
`services.api.gateway.partner_routes()`; the gateway imports this module, so that import is lazy."""

from __future__ import annotations

import functools
import html
import inspect
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from importlib import metadata
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect as mi
from aiohttp import web

from services.api.errors import ErrorBody
from services.api.http import cached_json
from services.api.routes import Route

TITLE = "linjerum Partner API"
API_PREFIX = "/api/v1/"
REF_TEMPLATE = "#/components/schemas/{name}"
POSTMAN_SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
MAX_PATH_INT = 10**18 - 1  # services.api.http.path_int accepts at most 18 digits
DOCS_TAG = "Documentation"

# The spec's Errors table: per status, its description and the codes it may carry.
ERRORS: dict[int, tuple[str, tuple[tuple[str, str], ...]]] = {
    401: ("Unauthorized", (("unauthorized", "Missing, invalid, or revoked API key"),)),
    404: ("Not found", (("not_found", "Resource missing, draft, or not in your organization"),)),
    409: (
        "Conflict with the current state",
        (
            ("insufficient_availability", "Ticket types sold out mid-request"),
            ("seats_taken", "One or more requested seats are now taken"),
            ("max_uses_reached", "Discount code exhausted"),
            ("not_yet_paid", "Purchase not confirmed; cannot download PDFs"),
            ("daily_capacity_exceeded", "Attraction ran out of capacity on visit_date"),
            ("idempotency_in_flight", "Retry while the original request still running"),
            ("already_paid", "Tried to cancel a purchase that is already paid"),
        ),
    ),
    422: (
        "Invalid request",
        (
            ("invalid_request", "Malformed payload or parameter (see detail)"),
            ("invalid_discount_code", "Discount code invalid or expired"),
            ("idempotency_key_reuse", "Same key sent with a different request body"),
        ),
    ),
    413: ("Payload too large", (("payload_too_large", "The body is over 1 MiB"),)),
    415: (
        "Unsupported media type",
        (("unsupported_media_type", "The body is not sent as application/json"),),
    ),
    429: (
        "Too many requests",
        (
            ("rate_limited", "Over the per-minute limit for this endpoint"),
            ("too_many_auth_failures", "IP blocked after repeated bad tokens"),
        ),
    ),
    500: ("Internal error", (("internal_error", "Unexpected server-side failure"),)),
    502: ("Bad gateway", (("stripe_error", "Stripe PaymentIntent creation failed"),)),
    503: (
        "Service unavailable",
        (
            ("payment_processing_unavailable", "Event's Stripe account not onboarded"),
            ("service_unavailable", "Database or message bus out of reach; see Retry-After"),
        ),
    ),
}

DESCRIPTION = """\
A headless ticketing API for partners building their own ticket-buying frontends.

Authenticate every call with your API key as a bearer token: `Authorization: Bearer tk_live_...`.
This document, the Postman collection and the HTML documentation are public.

Every response under /api/v1/ carries `X-Request-ID` (send your own to have it echoed back),
`X-RateLimit-Limit` and `X-RateLimit-Remaining`; a 429 also carries `Retry-After`. Errors are
`{"error": code, "detail"?: text}`: branch on `error`, never on `detail`. Polling endpoints
answer with an `ETag` and a bodyless 304 when `If-None-Match` matches it.

Timestamps are ISO-8601 in UTC, money is in the smallest currency unit, ids are integers."""


# ---- the OpenAPI document's own types ---------------------------------------------------------

JsonSchema = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="A JSON Schema (2020-12) object",
        extra_json_schema={"additionalProperties": True},
    ),
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


HeaderRef = Annotated[
    dict[str, str], msgspec.Meta(description="A reference to one of components.headers")
]


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
    openapi: Literal["3.1.0"]
    info: OpenApiInfo
    servers: list[OpenApiServer]
    tags: list[OpenApiTag]
    security: list[dict[str, list[str]]]
    paths: dict[str, dict[str, OpenApiOperation]]
    components: OpenApiComponents


# ---- the Postman collection's types (v2.1.0) --------------------------------------------------


class PostmanInfo(Doc, kw_only=True):
    name: str
    schema: Literal["https://schema.getpostman.com/json/collection/v2.1.0/collection.json"]
    description: str | None = None


class PostmanVariable(Doc, kw_only=True):
    key: str
    value: str
    type: Literal["string"] = "string"
    description: str | None = None
    disabled: bool = False


class PostmanAuth(Doc, kw_only=True):
    type: Literal["bearer", "noauth"]
    bearer: list[PostmanVariable] = []


class PostmanUrl(Doc, kw_only=True):
    raw: str
    host: list[str]
    path: list[str]
    query: list[PostmanVariable] = []
    variable: list[PostmanVariable] = []


class PostmanRawOptions(Doc, kw_only=True):
    language: Literal["json"]


class PostmanBodyOptions(Doc, kw_only=True):
    raw: PostmanRawOptions


class PostmanBody(Doc, kw_only=True):
    mode: Literal["raw"]
    raw: str
    options: PostmanBodyOptions


class PostmanRequest(Doc, kw_only=True):
    method: str
    header: list[PostmanVariable]
    url: PostmanUrl
    auth: PostmanAuth | None = None
    body: PostmanBody | None = None
    description: str | None = None


class PostmanItem(Doc, kw_only=True):
    name: str
    request: PostmanRequest


class PostmanFolder(Doc, kw_only=True):
    name: str
    item: list[PostmanItem]


class PostmanCollection(Doc, kw_only=True):
    info: PostmanInfo
    auth: PostmanAuth
    variable: list[PostmanVariable]
    item: list[PostmanFolder]


# ---- building the OpenAPI document -----------------------------------------------------------


def documented(route: Route) -> bool:
    """Operations are the versioned API; /api-docs (HTML for people) is not one."""
    return route.path.startswith(API_PREFIX)


def uses_etag(route: Route) -> bool:
    """A handler that answers with a snapshot sends an ETag and honours If-None-Match."""
    code = getattr(inspect.unwrap(route.handler), "__code__", None)
    names = set(code.co_names) if code is not None else set()
    return route.method == "GET" and bool(names & {"cached_json", "snapshot"})


def error_statuses(route: Route) -> list[int]:
    """The route's declared errors plus those the gateway itself produces for it: 401/429 from
    authentication and rate limits, 422 from decoding its query, body or path, 413 and 415 from
    reading a body, 503 while the database or NATS is out of reach."""
    statuses = set(route.errors) | {503}
    if route.authenticated:
        statuses |= {401, 429}
    if route.bucket:
        statuses.add(429)
    if route.query is not None or route.body is not None or route.path_params:
        statuses.add(422)
    if route.body is not None:
        statuses |= {413, 415}
    return sorted(statuses)


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
    "ETag": OpenApiHeader(
        description="Strong validator of the body; send it back as If-None-Match",
        required=True,
        schema={"type": "string", "minLength": 2},
    ),
}


def _headers(status: int, route: Route) -> dict[str, HeaderRef]:
    """References to the response headers the gateway sets for this status of this route."""
    names = ["X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining"]
    if status == 429:
        names.append("Retry-After")
    if status in (route.status, 304) and uses_etag(route):
        names.append("ETag")
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


# Codes that only a request body can cause, or only an authenticated route can answer.
_BODY_CODES = {"invalid_discount_code", "idempotency_key_reuse"}
_AUTH_CODES = {"unauthorized", "too_many_auth_failures"}


def error_codes(status: int, route: Route) -> list[tuple[str, str]]:
    """(code, meaning) of the spec's Errors table that this route can answer with."""
    _, codes = ERRORS.get(status, ("Error", ()))
    return [
        (code, meaning)
        for code, meaning in codes
        if (route.body is not None or code not in _BODY_CODES)
        and (route.authenticated or code not in _AUTH_CODES)
    ]


def _error_schema(status: int, route: Route) -> dict[str, Any]:
    codes = [code for code, _ in error_codes(status, route)]
    schema: dict[str, Any] = {"$ref": REF_TEMPLATE.format(name=ErrorBody.__name__)}
    if not codes:
        return schema
    return {"allOf": [schema, {"properties": {"error": {"enum": codes}}}]}


def _error_description(status: int, route: Route) -> str:
    """The spec's title and codes for the status; a status outside its Errors table (say, a
    webhook's 400) is described by its HTTP phrase and may carry any code."""
    codes = error_codes(status, route)
    if not codes:
        return HTTPStatus(status).phrase
    title = ERRORS[status][0]
    return title + ": " + "; ".join(f"`{code}`: {meaning}" for code, meaning in codes)


def _path_schema(kind: type, components: dict[str, Any]) -> dict[str, Any]:
    if kind is int:
        return {"type": "integer", "minimum": 1, "maximum": MAX_PATH_INT}
    if kind is str:
        return {"type": "string", "minLength": 1}
    (schema,), found = msgspec.json.schema_components([kind], ref_template=REF_TEMPLATE)
    components.update(found)
    return schema


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
                schema=field_schema,
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
            description=_error_description(status, route),
            headers=_headers(status, route),
            content={"application/json": OpenApiMediaType(schema=_error_schema(status, route))},
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
    if route.media_type == "application/pdf":
        content["application/pdf"] = OpenApiMediaType(
            schema={"type": "string", "contentMediaType": "application/pdf"}
        )
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


INT_KEY = {"type": "string", "pattern": "^-?[0-9]+$"}


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
    """The OpenAPI 3.1 document of the given routes (the ones under /api/v1/)."""
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
        openapi="3.1.0",
        info=OpenApiInfo(title=TITLE, version=_version(), description=DESCRIPTION),
        servers=[OpenApiServer(url="/", description="This gateway; paths include /api/v1")],
        tags=[OpenApiTag(name=tag) for tag in tags],
        security=[{"bearerAuth": []}],
        paths=paths,
        components=OpenApiComponents(
            schemas=dict(sorted(components.items())),
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


# ---- examples from schemas -------------------------------------------------------------------

_STRING_FORMATS = {
    "date": "2026-05-01",
    "date-time": "2026-05-01T19:00:00Z",
    "time": "19:00:00",
    "email": "partner@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_of(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A value that satisfies the schema, for request templates: defaults and first choices,
    minimums for numbers, one item per array."""
    if depth > 12:
        return None
    if "$ref" in schema:
        target = components[schema["$ref"].rsplit("/", 1)[1]]
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return example_of({**target, **siblings}, components, depth + 1)
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return example_of(options[0], components, depth + 1)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = example_of(part, components, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        if "properties" in schema:
            return {
                name: example_of(sub, components, depth + 1)
                for name, sub in schema["properties"].items()
            }
        extra = schema.get("additionalProperties")
        if not extra:
            return {}
        key = example_of(schema.get("propertyNames", {"type": "string"}), components, depth + 1)
        return {key: example_of(extra, components, depth + 1)}
    if kind == "array":
        item = example_of(schema.get("items", {}), components, depth + 1)
        return [item] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        value = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        value = min(value, schema.get("maximum", value))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("pattern") == INT_KEY["pattern"]:
            return "1"
        text = _STRING_FORMATS.get(schema.get("format", ""), "string")
        text = text.ljust(schema.get("minLength", 0), "x")
        return text[: schema["maxLength"]] if "maxLength" in schema else text
    return None


# ---- the Postman collection ------------------------------------------------------------------


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _postman_request(
    method: str, path: str, operation: OpenApiOperation, components: dict[str, Any]
) -> PostmanItem:
    query = [
        PostmanVariable(
            key=p.name,
            value=_param_text(example_of(p.schema, components)),
            description=p.description,
            disabled=not p.required,
        )
        for p in operation.parameters
        if p.in_ == "query"
    ]
    variables = [
        PostmanVariable(key=p.name, value=_param_text(example_of(p.schema, components)))
        for p in operation.parameters
        if p.in_ == "path"
    ]
    segments = [
        ":" + part[1:-1] if part.startswith("{") and part.endswith("}") else part
        for part in path.strip("/").split("/")
    ]
    raw = "{{base_url}}/" + "/".join(segments)
    if query:
        raw += "?" + "&".join(f"{q.key}={q.value}" for q in query if not q.disabled)
    headers = [PostmanVariable(key="Accept", value=_accept(operation))]
    body = None
    if operation.request_body is not None:
        schema = operation.request_body.content["application/json"].schema
        example = msgspec.json.format(
            msgspec.json.encode(example_of(schema, components)), indent=2
        ).decode()
        body = PostmanBody(
            mode="raw",
            raw=example,
            options=PostmanBodyOptions(raw=PostmanRawOptions(language="json")),
        )
        headers.append(PostmanVariable(key="Content-Type", value="application/json"))
    return PostmanItem(
        name=operation.summary,
        request=PostmanRequest(
            method=method,
            header=headers,
            url=PostmanUrl(
                raw=raw.rstrip("?"),
                host=["{{base_url}}"],
                path=segments,
                query=query,
                variable=variables,
            ),
            auth=PostmanAuth(type="noauth") if operation.security == [] else None,
            body=body,
            description=f"{operation.summary}\n\n`{method} {path}`",
        ),
    )


def _accept(operation: OpenApiOperation) -> str:
    for status, response in operation.responses.items():
        if status.startswith("2") and response.content:
            return next(iter(response.content))
    return "application/json"


def postman_collection(document: OpenApiDocument, base_url: str) -> PostmanCollection:
    """A Postman v2.1 collection of the document: one folder per tag, one request per
    operation, bearer auth from the `api_token` collection variable."""
    components = document.components.schemas
    folders: dict[str, list[PostmanItem]] = {tag.name: [] for tag in document.tags}
    for method, path, operation in operations(document):
        for tag in operation.tags[:1]:
            folders.setdefault(tag, []).append(
                _postman_request(method, path, operation, components)
            )
    return PostmanCollection(
        info=PostmanInfo(
            name=document.info.title,
            schema=POSTMAN_SCHEMA,
            description="Set the api_token collection variable to your API key.",
        ),
        auth=PostmanAuth(
            type="bearer", bearer=[PostmanVariable(key="token", value="{{api_token}}")]
        ),
        variable=[
            PostmanVariable(
                key="base_url", value=base_url, description="Origin of the API, no trailing /"
            ),
            PostmanVariable(key="api_token", value="", description="Your tk_live_... API key"),
        ],
        item=[PostmanFolder(name=tag, item=items) for tag, items in folders.items() if items],
    )


# ---- the HTML page ---------------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:40px}
h3{margin:28px 0 6px;font-size:17px}h4{margin:14px 0 4px;font-size:14px}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
pre{background:#f6f8fa;padding:10px;border-radius:6px;white-space:pre-wrap}
table{border-collapse:collapse;width:100%;margin:4px 0 8px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
.op{border:1px solid #d0d7de;border-radius:8px;padding:4px 16px 12px;margin:16px 0}
.m{display:inline-block;min-width:52px;text-align:center;border-radius:4px;color:#fff;
font-weight:700;font-size:12px;padding:2px 6px;margin-right:8px}
.GET{background:#1f6feb}.POST{background:#1a7f37}.PUT,.PATCH{background:#9a6700}
.DELETE{background:#cf222e}.muted{color:#656d76}nav ul{columns:2}a{color:#0969da}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _anchor(name: str) -> str:
    return "schema-" + _slug(name)


def _type_html(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f'<a href="#{_anchor(name)}">{_e(name)}</a>'
    if "allOf" in schema:
        return " &amp; ".join(_type_html(s) for s in schema["allOf"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type_html(s) for s in schema[key])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{_e(_json(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{_e(_json(schema['const']))}</code>"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_e(k) for k in kind)
    if kind == "array":
        return "array of " + _type_html(schema.get("items", {}))
    if kind == "object" and "properties" not in schema:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            key = "integer key" if schema.get("propertyNames") == INT_KEY else "string"
            return f"map of {key} → " + _type_html(extra)
        return "object"
    if kind is None:
        return "object" if "properties" in schema else "any"
    if "format" in schema:
        return f"{_e(kind)} ({_e(schema['format'])})"
    if "contentMediaType" in schema:
        return f"binary ({_e(schema['contentMediaType'])})"
    return _e(kind)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("pattern", "matches <code>{}</code>"),
    ("minItems", "≥ {} items"),
    ("maxItems", "≤ {} items"),
)


def _notes(schema: dict[str, Any]) -> str:
    notes = [_e(schema["description"])] if schema.get("description") else []
    for key, template in _CONSTRAINTS:
        if key in schema:
            notes.append(template.format(_e(schema[key])))
    if "default" in schema:
        notes.append(f"default <code>{_e(_json(schema['default']))}</code>")
    return "; ".join(notes)


def _fields_table(schema: dict[str, Any], components: dict[str, Any]) -> str:
    """The field table of an object schema (following one $ref), or its type when it is not
    an object with properties."""
    target = schema
    if "$ref" in schema:
        target = components.get(schema["$ref"].rsplit("/", 1)[1], {})
    properties = target.get("properties")
    if not properties:
        return f"<p>{_type_html(schema)}</p>"
    required = set(target.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td>{_type_html(sub)}</td>"
        f"<td>{'yes' if name in required else 'no'}</td><td>{_notes(sub)}</td></tr>"
        for name, sub in properties.items()
    )
    head = f"<p>{_type_html(schema)}</p>" if "$ref" in schema else ""
    return (
        f"{head}<table><tr><th>Field</th><th>Type</th><th>Required</th><th>Notes</th></tr>"
        f"{rows}</table>"
    )


def _operation_html(
    method: str, path: str, op: OpenApiOperation, components: dict[str, Any]
) -> str:
    auth = "Public: no token needed." if op.security == [] else "Requires a bearer token."
    parts = [
        f'<section class="op" id="{_e(op.operation_id)}">',
        f'<h3><span class="m {_e(method)}">{_e(method)}</span><code>{_e(path)}</code></h3>',
        f"<p>{_e(op.summary.rstrip('.'))}. <span class='muted'>{auth} "
        f"Operation id <code>{_e(op.operation_id)}</code>.</span></p>",
    ]
    if op.parameters:
        rows = "".join(
            f"<tr><td><code>{_e(p.name)}</code></td><td>{_e(p.in_)}</td>"
            f"<td>{_type_html(p.schema)}</td><td>{'yes' if p.required else 'no'}</td>"
            f"<td>{_notes({**p.schema, 'description': p.description or ''})}</td></tr>"
            for p in op.parameters
        )
        parts.append(
            "<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Type</th>"
            f"<th>Required</th><th>Notes</th></tr>{rows}</table>"
        )
    if op.request_body is not None:
        for media, content in op.request_body.content.items():
            parts.append(f"<h4>Request body <span class='muted'>{_e(media)}</span></h4>")
            parts.append(_fields_table(content.schema, components))
            example = example_of(content.schema, components)
            parts.append(f"<pre>{_e(msgspec.json.format(_json(example), indent=2))}</pre>")
    errors = []
    for status, response in op.responses.items():
        if status.startswith(("2", "3")):
            parts.append(f"<h4>Response {_e(status)}</h4><p>{_e(response.description)}</p>")
            for media, content in response.content.items():
                parts.append(f"<p class='muted'>{_e(media)}</p>")
                parts.append(_fields_table(content.schema, components))
            if response.headers:
                names = ", ".join(f"<code>{_e(h)}</code>" for h in response.headers)
                parts.append(f"<p class='muted'>Headers: {names}</p>")
        else:
            meanings = dict(ERRORS.get(int(status), ("", ()))[1])
            for content in response.content.values():
                for code in _codes_of(content.schema):
                    errors.append(
                        f"<tr><td>{_e(status)}</td><td><code>{_e(code)}</code></td>"
                        f"<td>{_e(meanings.get(code, ''))}</td></tr>"
                    )
    if errors:
        parts.append(
            "<h4>Errors</h4><table><tr><th>Status</th><th><code>error</code></th>"
            "<th>Meaning</th></tr>" + "".join(errors) + "</table>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _codes_of(schema: dict[str, Any]) -> list[str]:
    """The `error` codes an error response's schema allows."""
    for part in schema.get("allOf", []):
        codes = part.get("properties", {}).get("error", {}).get("enum")
        if codes:
            return codes
    return []


def _description_html(text: str) -> str:
    paragraphs = text.split("\n\n")
    return "".join(f"<p>{_e(p)}</p>" for p in paragraphs)


def render_html(document: OpenApiDocument) -> str:
    """The documentation page: every operation with its parameters, body and response field
    tables and error codes, then every schema. Inline CSS only, nothing fetched."""
    components = document.components.schemas
    by_tag: dict[str, list[tuple[str, str, OpenApiOperation]]] = {t.name: [] for t in document.tags}
    for method, path, op in operations(document):
        by_tag.setdefault(op.tags[0] if op.tags else "Other", []).append((method, path, op))
    nav = "".join(
        f"<li>{_e(tag)}<ul>"
        + "".join(
            f'<li><a href="#{_e(op.operation_id)}">{_e(method)} {_e(path)}</a></li>'
            for method, path, op in ops
        )
        + "</ul></li>"
        for tag, ops in by_tag.items()
        if ops
    )
    sections = "".join(
        f"<h2 id='tag-{_e(_slug(tag))}'>{_e(tag)}</h2>"
        + "".join(_operation_html(m, p, op, components) for m, p, op in ops)
        for tag, ops in by_tag.items()
        if ops
    )
    schemas = "".join(
        f"<h3 id='{_e(_anchor(name))}'>{_e(name)}</h3>"
        + _fields_table({"$ref": REF_TEMPLATE.format(name=name)}, components)
        for name in components
    )
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(document.info.title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(document.info.title)}</h1>"
        f"<p class='muted'>Version {_e(document.info.version)} · "
        "<a href='/api/v1/openapi.json'>OpenAPI 3.1 document</a> · "
        "<a href='/api/v1/postman.json'>Postman collection</a></p>"
        f"{_description_html(document.info.description)}"
        f"<nav><h2>Operations</h2><ul>{nav}</ul></nav>{sections}"
        f"<h2>Schemas</h2>{schemas}</main></body></html>\n"
    )


# ---- the public routes -----------------------------------------------------------------------


@functools.cache
def published() -> tuple[OpenApiDocument, str]:
    """The document and the page of this process's routes, built once on first use."""
    from services.api.gateway import partner_routes

    document = openapi_document(partner_routes())
    return document, render_html(document)


async def openapi_json(request: web.Request) -> web.Response:
    return cached_json(request, published()[0])


async def postman_json(request: web.Request) -> web.Response:
    base_url = f"{request.scheme}://{request.host}"
    return cached_json(request, postman_collection(published()[0], base_url))


async def api_docs(request: web.Request) -> web.Response:
    return web.Response(
        text=published()[1],
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "Cache-Control": "no-cache",
        },
    )


ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/v1/openapi.json",
        openapi_json,
        "OpenAPI 3.1 document of this API",
        DOCS_TAG,
        OpenApiDocument,
        authenticated=False,
    ),
    Route(
        "GET",
        "/api/v1/postman.json",
        postman_json,
        "Postman v2.1 collection of this API",
        DOCS_TAG,
        PostmanCollection,
        authenticated=False,
    ),
    Route(
        "GET",
        "/api-docs",
        api_docs,
        "HTML documentation",
        DOCS_TAG,
        media_type="text/html",
        authenticated=False,
    ),
]
