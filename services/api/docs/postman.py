"""The Postman v2.1 collection of an OpenAPI document: one folder per tag, one request per
operation with an example body, bearer auth from the `api_token` collection variable."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from services.api.docs.examples import example_of
from services.api.docs.openapi import operations
from services.api.docs.spec import Doc, OpenApiDocument, OpenApiOperation

POSTMAN_SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"


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
    bearer: list[PostmanVariable] = msgspec.field(default_factory=list)


class PostmanUrl(Doc, kw_only=True):
    raw: str
    host: list[str]
    path: list[str]
    query: list[PostmanVariable] = msgspec.field(default_factory=list)
    variable: list[PostmanVariable] = msgspec.field(default_factory=list)


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
