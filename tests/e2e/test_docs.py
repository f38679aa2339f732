"""The public documentation over real HTTP: the OpenAPI document, the Postman collection and the
HTML page need no token, work offline, and describe every route the gateway serves with the
real schemas of its payloads (a partner's generated client is only as good as these). The page
is Redoc, vendored and served by the gateway, rendering the generated document."""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from services.api.docs.openapi import documented, openapi_document, replayable
from services.api.docs.page import BUNDLE_PATH, REDOC_BUNDLE
from services.api.docs.postman import POSTMAN_SCHEMA, postman_collection
from services.api.gateway import partner_routes
from services.api.routes import Route
from tests.e2e.conftest import bearer

DOCS = ("/api/v1/openapi.json", "/api/v1/postman.json", "/api-docs")


async def _json(api: TestClient, path: str) -> dict[str, Any]:
    response = await api.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, kind, name = schema["$ref"].split("/")
        schema = document["components"][kind][name]
    return schema


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


async def test_the_docs_need_no_token(api: TestClient) -> None:
    """Fetching the docs is the first thing a partner does, before they have a key."""
    for path in DOCS:
        response = await api.get(path)
        assert response.status == 200, (path, await response.text())
        assert "X-Request-ID" in response.headers
    for path in DOCS[:2]:
        response = await api.get(path)
        assert response.content_type == "application/json"
        for name in ("ETag", "X-RateLimit-Limit", "X-RateLimit-Remaining"):
            assert name in response.headers, (path, name)
    page = await api.get("/api-docs")
    assert page.content_type == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


async def test_the_document_is_valid_openapi_3_0(api: TestClient) -> None:
    """Validated against the OpenAPI 3.0 meta-schema (as bundled with schemathesis), which the
    spec promises and client generators read, with every reference resolving."""
    document = await _json(api, "/api/v1/openapi.json")
    assert document["openapi"] == "3.0.3"
    assert OPENAPI_30_VALIDATOR.is_valid(document)
    assert document["info"]["title"] == "linjerum Partner API"
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "tk_live_...",
        "description": "Partner API key from Settings → API",
    }
    schemathesis.openapi.from_dict(document).validate()
    for ref in _refs(document):
        assert ref.startswith("#/components/"), ref
        _resolve(document, {"$ref": ref})
    operation_ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(operation_ids) == len(set(operation_ids))


async def test_every_route_is_documented_as_it_is_served(api: TestClient) -> None:
    """The document is generated from the route table, so each route's method, path
    parameters, query, body, statuses and auth must appear exactly as declared."""
    document = await _json(api, "/api/v1/openapi.json")
    routes = [route for route in partner_routes() if documented(route)]
    assert {(m, p) for m, p, _ in _operations(document)} == {(r.method, r.path) for r in routes}
    assert "/api-docs" not in document["paths"]
    for route in routes:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["operationId"] == route.operation_id
        assert operation["tags"] == [route.tag]
        params = {(p["in"], p["name"]): p for p in operation.get("parameters", [])}
        assert {n for i, n in params if i == "path"} == set(re.findall(r"{(\w+)}", route.path))
        assert all(params[("path", name)]["required"] for name in route.path_params)
        assert (("header", "Idempotency-Key") in params) == route.idempotent
        if route.query is not None:
            for field in msgspec.structs.fields(route.query):
                assert params[("query", field.encode_name)].get("required", False) == field.required
        assert ("requestBody" in operation) == (route.body is not None)
        statuses = set(operation["responses"])
        assert str(route.status) in statuses
        assert {str(status) for status in route.errors} <= statuses
        if route.authenticated:
            assert "security" not in operation and {"401", "429"} <= statuses
        else:
            assert operation["security"] == []
        for status, response in operation["responses"].items():
            headers = set(response.get("headers", {}))
            assert {"X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= headers
            if status == "429":
                assert "Retry-After" in headers
            replayed = route.idempotent and replayable(int(status))
            assert ("Idempotent-Replay" in headers) == replayed, (route.path, status)
            if not status.startswith(("2", "3")):
                schema = response["content"]["application/json"]["schema"]
                error_body = {"$ref": "#/components/schemas/ErrorBody"}
                assert schema == error_body or schema["allOf"][0] == error_body


def _payload_schemas(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every schema a partner operation's parameters, body or responses lead to."""
    seen: set[str] = set()

    def walk(schema: Any) -> Iterator[dict[str, Any]]:
        if isinstance(schema, list):
            for item in schema:
                yield from walk(item)
            return
        if not isinstance(schema, dict):
            return
        if "$ref" in schema:
            if schema["$ref"] in seen:
                return
            seen.add(schema["$ref"])
            yield from walk(_resolve(document, schema))
            return
        yield schema
        for key in ("properties", "$defs"):
            for sub in schema.get(key, {}).values():
                yield from walk(sub)
        for key in ("items", "additionalProperties", "not"):
            yield from walk(schema.get(key))
        for key in ("anyOf", "oneOf", "allOf"):
            yield from walk(schema.get(key, []))

    for _, _, operation in _operations(document):
        if operation["tags"] == ["Documentation"]:
            continue
        for parameter in operation.get("parameters", []):
            yield from walk(parameter["schema"])
        for part in [operation.get("requestBody", {}), *operation["responses"].values()]:
            for content in part.get("content", {}).values():
                yield from walk(content["schema"])


async def test_payload_schemas_are_real_schemas(api: TestClient) -> None:
    """No `type: object` without its fields, no free-form value anywhere a partner reads or
    writes: what the reference spec left loose, ours spells out."""
    document = await _json(api, "/api/v1/openapi.json")
    schemas = list(_payload_schemas(document))
    assert len(schemas) > 50
    for schema in schemas:
        assert schema, "a free-form `{}` schema"
        if schema.get("type") == "object":
            extra = schema.get("additionalProperties")
            assert "properties" in schema or (isinstance(extra, dict) and extra), schema
        assert schema.get("additionalProperties") is not True, schema
    events = _resolve(document, {"$ref": "#/components/schemas/EventList"})
    assert events["required"] == ["events", "count"]
    limit = next(
        p for p in document["paths"]["/api/v1/events"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 25}
    assert "required" not in limit


async def _fill(api: TestClient, token: str, path: str, operation: dict[str, Any]) -> str | None:
    """A URL for the operation naming real objects of the seeded catalog, or None when this
    test does not know how to name them."""
    events = (await (await api.get("/api/v1/events", headers=bearer(token))).json())["events"]
    attractions = await (await api.get("/api/v1/attractions", headers=bearer(token))).json()
    event = next(e for e in events if e["slug"] == "hamlet-2026")
    known = {
        "slug": event["slug"]
        if path.startswith("/api/v1/events/")
        else attractions["attractions"][0]["slug"],
        "id": event["venue"]["id"],
        "event_id": event["id"],
    }
    url = path
    query = []
    for parameter in operation.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        if where == "path" or (where == "query" and parameter.get("required")):
            if name not in known:
                return None
            if where == "path":
                url = url.replace("{" + name + "}", str(known[name]))
            else:
                query.append(f"{name}={known[name]}")
    return url + ("?" + "&".join(query) if query else "")


async def test_polling_routes_answer_not_modified(api: TestClient, demo_token: str) -> None:
    """Where the document promises a 304, a matching If-None-Match gets one (no body), and a
    GET that promises none sends no ETag."""
    document = await _json(api, "/api/v1/openapi.json")
    checked = 0
    for method, path, operation in _operations(document):
        if method != "GET":
            continue
        url = await _fill(api, demo_token, path, operation)
        if url is None:
            continue
        first = await api.get(url, headers=bearer(demo_token))
        assert first.status == 200, (url, await first.text())
        if "304" not in operation["responses"]:
            assert "ETag" not in first.headers, url
            continue
        etag = first.headers["ETag"]
        again = await api.get(url, headers={**bearer(demo_token), "If-None-Match": etag})
        assert again.status == 304, url
        assert await again.read() == b""
        assert again.headers["ETag"] == etag
        checked += 1
    assert checked >= 10


async def test_the_postman_collection_has_one_request_per_operation(api: TestClient) -> None:
    """Importable as Postman v2.1: folders by tag, bearer auth from `api_token`, and each
    operation exactly once with its path variables in Postman's `:name` form."""
    document = await _json(api, "/api/v1/openapi.json")
    collection = await _json(api, "/api/v1/postman.json")
    assert collection["info"]["schema"] == POSTMAN_SCHEMA
    assert collection["info"]["name"] == document["info"]["title"]
    assert collection["auth"] == {
        "type": "bearer",
        "bearer": [{"key": "token", "value": "{{api_token}}"}],
    }
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["base_url"] == str(api.make_url("/")).rstrip("/")
    assert variables["api_token"] == ""
    requests = [
        (folder["name"], item["request"])
        for folder in collection["item"]
        for item in folder["item"]
    ]
    expected = sorted(
        (op["tags"][0], method, re.sub(r"{(\w+)}", r":\1", path))
        for method, path, op in _operations(document)
    )
    found = sorted(
        (folder, request["method"], "/" + "/".join(request["url"]["path"]))
        for folder, request in requests
    )
    assert found == expected
    for _, request in requests:
        assert request["url"]["raw"].startswith("{{base_url}}/api/v1/")
        assert request["url"]["host"] == ["{{base_url}}"]
    public = [r for _, r in requests if r["url"]["path"][-1] in ("openapi.json", "postman.json")]
    assert len(public) == 2 and all(r["auth"] == {"type": "noauth"} for r in public)


async def test_every_example_body_decodes_into_its_type(api: TestClient) -> None:
    """A partner who presses Send in Postman gets past decoding (cross-field rules aside)."""
    collection = await _json(api, "/api/v1/postman.json")
    bodies = {(r.method, r.path): r.body for r in partner_routes() if r.body is not None}
    examples = {
        (
            item["request"]["method"],
            re.sub(r":(\w+)", r"{\1}", item["request"]["url"]["raw"].split("?")[0]),
        ): item
        for folder in collection["item"]
        for item in folder["item"]
    }
    for (method, path), body in bodies.items():
        request = examples[(method, "{{base_url}}" + path)]["request"]
        assert request["body"]["mode"] == "raw"
        assert request["body"]["options"] == {"raw": {"language": "json"}}
        msgspec.json.decode(request["body"]["raw"], type=body)


def _policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


async def test_the_html_page_is_redoc_on_our_own_document(api: TestClient) -> None:
    """The page loads the vendored Redoc from this gateway and points it at the generated
    document; nothing is fetched from elsewhere, so it works offline, and its CSP lets scripts
    come from this origin only (styles may be inline: Redoc writes its own)."""
    response = await api.get("/api-docs")
    page = await response.text()
    assert re.search(r'<redoc spec-url="/api/v1/openapi.json"', page)
    assert re.findall(r"<script\b[^>]*>", page) == [f'<script src="{BUNDLE_PATH}">']
    assert re.findall(r"</script>", page) == ["</script>"], "no inline script"
    for url in re.findall(r"""\b(?:src|href|spec-url|action)\s*=\s*["']([^"']*)""", page):
        assert url == "data:," or (url.startswith("/") and not url.startswith("//")), url
    assert re.findall(r"<link\b[^>]*>", page) == ['<link rel="icon" href="data:,">']
    assert not re.search(r"<iframe|<img|@import|url\(|https?:", page, re.I)
    policy = _policy(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["frame-ancestors"] == ["'none'"]
    sources = [source for values in policy.values() for source in values]
    assert not [s for s in sources if "http" in s or "*" in s or "eval" in s], sources


async def test_the_redoc_bundle_is_served_from_the_vendored_file(api: TestClient) -> None:
    """Served as JavaScript the browser may not sniff as anything else, revalidated with a
    bodyless 304, and byte for byte the file whose version and checksum its README gives."""
    response = await api.get(BUNDLE_PATH)
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = await response.read()
    assert body == REDOC_BUNDLE.read_bytes()
    again = await api.get(BUNDLE_PATH, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304 and await again.read() == b""
    static = REDOC_BUNDLE.parent
    readme = (static / "README.md").read_text()
    assert f"`{hashlib.sha256(body).hexdigest()}`" in readme
    version = re.search(r"\*\*(\d+\.\d+\.\d+)\*\*", readme)
    notices = (static / "redoc.standalone.js.LICENSE.txt").read_text()
    assert version is not None and f'Version: "{version[1]}"' in notices
    assert "MIT License" in (static / "LICENSE").read_text()


def test_the_vendored_files_are_package_data() -> None:
    """The repository is installed editable, but an image installs a wheel: it must carry the
    bundle and its licences."""
    root = Path(__file__).parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    package = REDOC_BUNDLE.parents[1]
    globs = config["tool"]["setuptools"]["package-data"][".".join(package.relative_to(root).parts)]
    for path in REDOC_BUNDLE.parent.iterdir():
        assert any(path.relative_to(package).match(glob) for glob in globs), path


# ---- a POST route's body, through the generator alone ----------------------------------------


class Seat(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    section_id: Annotated[int, msgspec.Meta(ge=1)]
    row: Annotated[str, msgspec.Meta(min_length=1, max_length=4)]


class BookingRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    event_slug: str
    quantity: Annotated[int, msgspec.Meta(ge=1, le=10)]
    seats: list[Seat]
    category: Literal["standard", "child"]
    visit_date: date | None = None
    note: str = ""


class BookingCreated(msgspec.Struct, frozen=True, kw_only=True):
    token: str


async def create_booking(request: web.Request) -> web.Response:
    raise NotImplementedError


def test_post_routes_get_a_request_body_and_a_working_example() -> None:
    """The Postman body comes from the body type, and decodes into it: a partner who presses
    Send gets past validation."""
    route = Route(
        "POST",
        "/api/v1/events/{slug}/bookings",
        create_booking,
        "Book seats",
        "Bookings",
        BookingCreated,
        status=201,
        body=BookingRequest,
        errors=(404, 409),
        path_params={"slug": str},
    )
    document = openapi_document([route])
    raw = msgspec.to_builtins(document)
    operation = raw["paths"]["/api/v1/events/{slug}/bookings"]["post"]
    assert operation["requestBody"] == {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/BookingRequest"}}
        },
    }
    assert set(operation["responses"]) == {
        *("201", "401", "404", "408", "409", "413", "415", "422", "429", "503")
    }
    assert "Seat" in raw["components"]["schemas"]
    collection = postman_collection(document, "http://127.0.0.1:8080")
    (folder,) = collection.item
    (item,) = folder.item
    assert item.request.body is not None
    decoded = msgspec.json.decode(item.request.body.raw, type=BookingRequest)
    assert decoded.quantity == 1 and decoded.seats[0].row == "stri"
    assert item.request.url.variable[0].key == "slug"
