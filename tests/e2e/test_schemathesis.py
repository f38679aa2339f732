"""Property-based testing of the partner API against its own OpenAPI document: schemathesis
generates valid and invalid requests for every documented operation and fails on any 5xx, any
undocumented status and any response that breaks the documented schema, headers or content
type.

The gateway is the e2e suite's own (conftest's `serve`, on a real TCP port on 127.0.0.1, with
everything it talks to) and keeps serving from the test's event loop, while schemathesis,
which calls it synchronously, runs in a worker thread."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api.docs.openapi import openapi_document
from services.api.gateway import partner_routes
from services.dev.demo_catalog import DEMO_ORGANIZATION
from tests.e2e.conftest import bearer, issue_key

MAX_EXAMPLES = 25  # per operation and generation mode: the whole run stays well under a minute

# Checks as configured for every generated case (schemathesis.toml's format).
CONFIG: dict[str, Any] = {
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
    },
    "generation": {"with-security-parameters": False},
}

# Built at import time from the same routes the gateway serves, so pytest can make one test per
# operation; test_the_served_document_is_the_one_under_test checks the gateway serves it as is.
DOCUMENT = msgspec.to_builtins(openapi_document(partner_routes()))
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(CONFIG))
OPERATIONS = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}

# Random slugs and ids almost never name a real object, so reads also draw from the seeded
# catalog's (known only once the gateway runs, hence deferred) to reach their 200 paths.
KNOWN: dict[str, list[Any]] = {}


def _known(kind: str) -> st.SearchStrategy[Any]:
    return st.deferred(lambda: st.sampled_from(KNOWN[kind]))


def _or_known(strategy: st.SearchStrategy[Any], name: str, kind: str) -> st.SearchStrategy[Any]:
    """The generated parameters, or a real value for `name` (each read below has just that
    one parameter in that place)."""
    return st.one_of(strategy, _known(kind).map(lambda value: {name: value}))


@schema.hook
def before_generate_path_parameters(
    context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Only GETs: a real slug in a POST could hold seats other tests expect to be free."""
    operation = context.operation
    if operation is None or operation.method.upper() != "GET":
        return strategy
    if operation.path in ("/api/v1/events/{slug}", "/api/v1/events/{slug}/availability"):
        return _or_known(strategy, "slug", "event_slugs")
    if operation.path.startswith("/api/v1/attractions/{slug}"):
        return _or_known(strategy, "slug", "attraction_slugs")
    if operation.path.startswith("/api/v1/venues/{id}"):
        return _or_known(strategy, "id", "venue_ids")
    return strategy


@schema.hook
def before_generate_query(
    context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    operation = context.operation
    if operation is not None and operation.path == "/api/v1/venues/{id}/seat-plan":
        return _or_known(strategy, "event_id", "event_ids")
    return strategy


BIGINT_MAX = 2**63 - 1


class Live(msgspec.Struct, frozen=True):
    base_url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
async def live(serve, pool: asyncpg.Pool, catalog: dict[str, int]) -> Live:
    """A fresh gateway (its own rate-limit windows) and a key of its own, with KNOWN filled
    from what the API lists for the demo organization."""
    client: TestClient = await serve()
    headers = bearer(await issue_key(pool, catalog[DEMO_ORGANIZATION]))
    lists = {}
    for path in ("events?limit=100", "attractions", "venues"):
        response = await client.get(f"/api/v1/{path}", headers=headers)
        assert response.status == 200, await response.text()
        lists[path.split("?")[0]] = await response.json()
    KNOWN["event_slugs"] = [event["slug"] for event in lists["events"]["events"]]
    KNOWN["event_ids"] = [event["id"] for event in lists["events"]["events"]]
    KNOWN["attraction_slugs"] = [a["slug"] for a in lists["attractions"]["attractions"]]
    KNOWN["venue_ids"] = [venue["id"] for venue in lists["venues"]["venues"]]
    assert all(KNOWN.values()), KNOWN
    return Live(str(client.make_url("/")).rstrip("/"), headers)


async def test_the_served_document_is_the_one_under_test(serve) -> None:
    """The run below uses the generated document; the gateway must serve exactly that one."""
    client: TestClient = await serve()
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    assert await response.json() == DOCUMENT


def _property_run(operation: schemathesis.APIOperation, live: Live) -> None:
    """schemathesis's valid and invalid cases for one operation, through hypothesis:
    derandomized and without an example database, so a failure reproduces on every run."""
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode, hooks=schema.hooks))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=live.base_url, headers=live.headers)

        run()


@pytest.mark.parametrize("label", list(OPERATIONS))
async def test_the_api_keeps_its_documented_promises(label: str, live: Live) -> None:
    """Every generated request gets a documented status, headers and body, and never a 5xx."""
    await asyncio.to_thread(_property_run, OPERATIONS[label], live)


async def test_an_event_id_beyond_bigint_is_refused(live: Live) -> None:
    """Found by this run once: an id beyond bigint reached asyncpg and answered 500."""
    case = OPERATIONS["GET /api/v1/venues/{id}/seat-plan"].Case(
        path_parameters={"id": KNOWN["venue_ids"][0]}, query={"event_id": BIGINT_MAX + 1}
    )
    await asyncio.to_thread(case.call_and_validate, base_url=live.base_url, headers=live.headers)
