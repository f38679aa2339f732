"""Decoding requests and encoding responses with msgspec: one place that turns malformed input
into a 422 naming the field, and that answers polling clients with ETag / 304."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from aiohttp import web

from infra.pgtext import storable
from services.api.context import organization_of, snapshots_of
from services.api.errors import ApiError, invalid_request
from services.api.routes import Handler

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_FIELD = re.compile(r"`\$\.?([^`]*)`")
_MISSING = re.compile(r"(?:missing required|contains unknown) field `([^`]*)`")
# Strings PostgreSQL cannot hold (infra.pgtext) fail the statement they are in, and with it
# whatever else it writes: a sales desk's append carries other buyers' purchases. In a JSON body
# they can only arrive escaped (msgspec refuses raw NUL bytes and lone surrogates itself): a
# body without such an escape is never walked.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
UNSTORABLE_DETAIL = "must not contain NUL characters or unpaired surrogates"
# JSON nested deeper than the decoder goes (about a thousand levels): no request needs it.
TOO_DEEP = "nested too deeply"
# How long a request's whole body may take to arrive (nginx's client_body_timeout is 60 s
# between two reads; a body here is at most a megabyte).
BODY_SECONDS = 30.0
_INTEGER = re.compile(r"^-?[0-9]{1,19}\Z")
# An id in a path or a ticket type id as a JSON object key: canonical, so two spellings never
# name one resource.
CANONICAL_ID = re.compile(r"^[1-9][0-9]{0,17}\Z")
# A path names one row: every id PostgreSQL's bigint holds is one that may not exist (a 404).
_PATH_ID = re.compile(r"^[1-9][0-9]{0,18}\Z")
_MAX_ID = 2**63 - 1


def check_text(field: str, value: str) -> None:
    """A 422 naming `field` when `value` cannot be stored."""
    if not storable(value):
        raise invalid_request(field, UNSTORABLE_DETAIL)


def _unstorable_field(value: Any, path: str) -> str | None:
    """The path (`buyer.name`, `attendees[0].name`) of the first string, key or value, that
    cannot be stored, in the notation msgspec's own errors use."""
    if isinstance(value, str):
        return None if storable(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and not storable(key):
                return inner
            found = _unstorable_field(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _unstorable_field(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _field_of(exc: msgspec.ValidationError, fallback: str) -> str:
    """The dotted path msgspec reports, with a missing field's own name appended."""
    message = str(exc)
    found = _FIELD.search(message)
    path = found.group(1) if found else ""
    missing = _MISSING.search(message)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path or fallback


def _message(exc: msgspec.ValidationError) -> str:
    return str(exc).split(" - at `")[0]


@functools.cache
def _integers(kind: type) -> frozenset[str]:
    """The query parameters of `kind` that are whole numbers."""
    found = set()
    for field in msgspec.inspect.type_info(kind).fields:  # type: ignore[attr-defined]
        inner = field.type.type if isinstance(field.type, msgspec.inspect.Metadata) else field.type
        options = inner.types if isinstance(inner, msgspec.inspect.UnionType) else (inner,)
        if any(isinstance(o, msgspec.inspect.IntType) for o in options):
            found.add(field.encode_name)
    return frozenset(found)


def parse_query(request: web.Request, kind: type[T]) -> T:
    """Query parameters as a typed Struct; `limit=abc` is a 422 naming `limit`, and so is a
    whole number spelt otherwise than in digits (`5.0`, `1e1`: one spelling per value)."""
    query = dict(request.query)
    for name, value in query.items():
        check_text(name if storable(name) else "query", value)
    for name in _integers(kind) & query.keys():
        if not _INTEGER.match(query[name]):
            raise invalid_request(name, "must be a whole number in digits")
    try:
        return msgspec.convert(query, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid_request(_field_of(exc, "query"), _message(exc)) from None


async def read_in_time(request: web.Request) -> None:
    """Reads the whole body (aiohttp keeps it for the handler's read) before the request waits
    for a lane: five bodies that never finished held the turns of every buyer's seat
    suggestions for as long as their sockets stayed open. A body that came whole with its
    headers (nearly every one) needs no timer."""
    if not request.body_exists or request.content.is_eof():
        return
    try:
        async with asyncio.timeout(BODY_SECONDS):
            await request.read()
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the body did not arrive within {BODY_SECONDS:g} s"
        ) from None


async def parse_body(request: web.Request, kind: type[T]) -> T:
    return decode_body(await request.read(), kind)


def decode_body(raw: bytes, kind: type[T]) -> T:
    """A JSON body as a typed Struct; malformed JSON, a wrong field or a string that cannot be
    stored is a 422 naming it, so such input never reaches a sales desk's shared append."""
    if not raw:
        raise invalid_request("body", "a JSON body is required")
    try:
        return _decoded(raw, kind)
    except RecursionError:
        raise invalid_request("body", TOO_DEEP) from None


def _decoded(raw: bytes, kind: type[T]) -> T:
    try:
        decoded = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        field = _field_of(exc, "body")
        key = _bad_key(raw, field) if "got `str`" in str(exc) else None
        if key is not None:
            raise invalid_request(key, "keys are ticket type ids") from None
        raise invalid_request(field, _message(exc)) from None
    except msgspec.DecodeError:
        field = _escaped_surrogate(raw)
        if field is not None:
            raise invalid_request(field or "body", UNSTORABLE_DETAIL) from None
        raise invalid_request("body", "malformed JSON") from None
    if _UNSTORABLE_ESCAPE.search(raw):
        field = _unstorable_field(msgspec.json.decode(raw), "")
        if field is not None:
            raise invalid_request(field or "body", UNSTORABLE_DETAIL)
    return decoded


def _bad_key(raw: bytes, path: str) -> str | None:
    """The first key of the object at `path` that is not an id, as `quantities.abc`: where a
    key of a `dict[int, ...]` is not a number, msgspec names the object, not the key. A body
    that is not JSON past the field msgspec refused is malformed before anything else."""
    try:
        value: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise invalid_request("body", "malformed JSON") from None
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if not isinstance(value, dict):
        return None
    return next((f"{path}.{key}" for key in value if not CANONICAL_ID.match(key)), None)


def _escaped_surrogate(raw: bytes) -> str | None:
    """The field of a lone surrogate's escape, which msgspec refuses as malformed JSON without
    saying where: the standard library's parser takes it, so the 422 can name the field."""
    if not _UNSTORABLE_ESCAPE.search(raw):
        return None
    try:
        return _unstorable_field(json.loads(raw), "")
    except ValueError:
        return None


def path_int(request: web.Request, name: str) -> int:
    value = request.match_info[name]
    # ASCII digits, no leading zero: one spelling per id
    if not _PATH_ID.match(value) or int(value) > _MAX_ID:
        raise invalid_request(name, "must be a positive integer")
    return int(value)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An encoded answer and its strong ETag: what a memoized read keeps between requests."""

    body: bytes
    etag: str


def snapshot(value: Any) -> Snapshot:
    body = _encoder.encode(value)
    return Snapshot(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')


def none_match(header: str, etag: str) -> bool:
    """RFC 9110's weak comparison, which If-None-Match uses: `*`, or any tag of the list whose
    opaque part equals ours, with or without `W/` (proxies weaken the tags of what they
    compress). Our tags hold no comma, so splitting the list on commas cannot hide one."""
    tags = (tag.strip() for tag in header.split(","))
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def answer(request: web.Request, snap: Snapshot) -> web.Response:
    """A matching If-None-Match gets a 304 with no body, so a client polling every few seconds
    costs almost nothing to answer."""
    headers = {"ETag": snap.etag, "Cache-Control": "no-cache"}
    if none_match(request.headers.get("If-None-Match", ""), snap.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=snap.body, content_type="application/json", headers=headers)


def cached_json(request: web.Request, value: Any) -> web.Response:
    return answer(request, snapshot(value))


def memoized(build: Callable[[web.Request], Awaitable[Snapshot]]) -> Handler:
    """A read handler whose answer is shared by every caller of the same organization asking
    for the same path and query, until the read models change (see `memo`)."""

    @functools.wraps(build)
    async def handler(request: web.Request) -> web.Response:
        return await shared_answer(request, build.__name__, lambda: build(request))

    return handler


async def shared_answer(
    request: web.Request,
    name: str,
    build: Callable[[], Awaitable[Snapshot]],
    version: Hashable = None,
) -> web.Response:
    """`name`'s answer to this path and query for the caller's organization, as `memoized`
    shares it; at `version` of what else it is built from (see Memo.get)."""
    key = (name, organization_of(request), request.path_qs)
    return answer(request, await snapshots_of(request).get(key, build, version))
