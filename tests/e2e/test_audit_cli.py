"""`linjerum events` and `linjerum audit` as an operator runs them after a partner's purchase:
the request id and the API key lead from the HTTP call to the events it stored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import asyncpg
import pytest

from infra.settings import Settings
from tests.e2e.conftest import bearer, order, post, small_event

LINJERUM = [sys.executable, "-m", "services.cli"]


def _linjerum(settings: Settings, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env["DATABASE_URL"] = settings.database_url
    env["LINJERUM_LOG_LEVEL"] = "warning"
    shown = subprocess.run(
        [*LINJERUM, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert shown.returncode == status, shown.stderr
    return shown


def _lines(shown: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in shown.stdout.splitlines()]


@pytest.fixture(scope="module")
async def purchase(api, pool: asyncpg.Pool, catalog) -> dict:
    """A seat bought through the API with a known request id: its event, key and request."""
    token, event_id, type_id = await small_event(pool, 5)
    key = await pool.fetchrow("SELECT id, name FROM api_keys ORDER BY id DESC LIMIT 1")
    request_id = f"audit-{uuid.uuid4().hex[:8]}"
    response = await api.post(
        "/api/v1/purchases",
        json=order(type_id),
        headers={**bearer(token), "X-Request-ID": request_id},
    )
    assert response.status == 201, await response.text()
    stored = await pool.fetch(
        "SELECT stream_id, version, type FROM events WHERE metadata->>'request_id' = $1",
        request_id,
    )
    return {
        "event_id": event_id,
        "key_id": key["id"],
        "key_name": key["name"],
        "request_id": request_id,
        "stored": {(r["stream_id"], r["version"], r["type"]) for r in stored},
    }


def test_events_shows_a_streams_history_with_who(settings: Settings, purchase: dict) -> None:
    history = _lines(_linjerum(settings, "events", f"event-{purchase['event_id']}"))
    assert [e["version"] for e in history] == list(range(1, len(history) + 1))
    held = [e for e in history if e["type"] == "SeatsHeld"]
    assert len(held) == 1
    assert held[0]["request_id"] == purchase["request_id"]
    assert held[0]["api_key_id"] == purchase["key_id"]
    assert held[0]["api_key_name"] == purchase["key_name"]
    assert held[0]["data"]["seats"]
    assert held[0]["recorded_at"].endswith("Z")
    # Where replay starts from it: the event's place in the global order.
    assert re.fullmatch(r"\d+:\d+", held[0]["position"]) and held[0]["event_id"]


def test_operators_mistakes_are_one_line_errors(settings: Settings) -> None:
    """A stream that does not exist, a duration past any date, a database out of reach: a line
    saying so and a failing exit status, never an empty success or a traceback."""
    missing = _linjerum(settings, "events", "event-999999999", status=1)
    assert missing.stderr.strip() == "linjerum events: no stream event-999999999"
    too_far = _linjerum(settings, "audit", "--since", "99999999d", status=2)
    assert "reaches back before any date" in too_far.stderr and "Traceback" not in too_far.stderr
    plural = _linjerum(settings, "audit", "--category", "purchases", status=2)
    assert "no stream category 'purchases'" in plural.stderr
    typo = _linjerum(settings, "audit", "--type", "SeatHeld", status=2)
    assert "did you mean SeatsHeld" in typo.stderr
    gone = settings.database_url.rsplit("@", 1)[0] + "@127.0.0.1:9/linjerum"
    unreachable = _linjerum(Settings(database_url=gone), "audit", "--limit", "1", status=1)
    assert unreachable.stderr.startswith("linjerum audit: cannot use postgresql: ")
    assert "Traceback" not in unreachable.stderr


def test_audit_by_request_lists_what_it_stored(settings: Settings, purchase: dict) -> None:
    found = _lines(_linjerum(settings, "audit", "--request-id", purchase["request_id"]))
    assert {(e["stream_id"], e["version"], e["type"]) for e in found} == purchase["stored"]
    assert len(found) == len(purchase["stored"])
    assert {"SeatsHeld", "PurchaseOpened"} <= {e["type"] for e in found}
    times = [e["recorded_at"] for e in found]
    assert times == sorted(times, reverse=True)


def test_audit_filters_by_key_and_category(settings: Settings, purchase: dict) -> None:
    key = str(purchase["key_id"])
    found = _lines(_linjerum(settings, "audit", "--key", key, "--category", "purchase"))
    assert found
    assert all(e["stream_id"].startswith("purchase-") for e in found)
    assert all(e["api_key_id"] == purchase["key_id"] for e in found)
    held = _lines(_linjerum(settings, "audit", "--key", key, "--type", "SeatsHeld"))
    assert [e["stream_id"] for e in held] == [f"event-{purchase['event_id']}"]
    assert _lines(_linjerum(settings, "audit", "--key", key, "--since", "2030-01-01")) == []
    assert len(_lines(_linjerum(settings, "audit", "--key", key, "--limit", "1"))) == 1


async def test_audit_by_organization_keeps_what_no_key_did_to_its_streams(
    settings: Settings, pool: asyncpg.Pool, purchase: dict
) -> None:
    """The event was scheduled by a catalog command (no key) and held through the API: both are
    the organization's, and none of it another organization's."""
    stream = f"event-{purchase['event_id']}"
    org = await pool.fetchval(
        "SELECT (data->>'organization_id')::bigint FROM events"
        " WHERE stream_id = $1 AND version = 1",
        stream,
    )
    slug = await pool.fetchval(
        "SELECT data->>'slug' FROM events WHERE stream_id = $1", f"organization-{org}"
    )
    found = _lines(_linjerum(settings, "audit", "--org", slug, "--category", "event"))
    assert {"EventScheduled", "SeatsHeld"} <= {e["type"] for e in found if e["stream_id"] == stream}
    other = await pool.fetchval(
        "SELECT data->>'slug' FROM events WHERE type = 'OrganizationRegistered'"
        " AND (data->>'organization_id')::bigint <> $1 LIMIT 1",
        org,
    )
    assert other is not None
    theirs = _lines(_linjerum(settings, "audit", "--org", other, "--limit", "1000"))
    assert stream not in {e["stream_id"] for e in theirs}


def test_api_keys_are_a_category_audit_takes(settings: Settings, purchase: dict) -> None:
    """Keys made and revoked are streams of the store as any other (`apikey-N`)."""
    found = _lines(_linjerum(settings, "audit", "--category", "apikey", "--limit", "50"))
    assert f"apikey-{purchase['key_id']}" in {e["stream_id"] for e in found}
    assert {e["type"] for e in found} <= {"ApiKeyCreated", "ApiKeyRevoked"}


def test_table_is_readable(settings: Settings, purchase: dict) -> None:
    table = _linjerum(settings, "audit", "--request-id", purchase["request_id"], "--table")
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "recorded_at",
        "stream_id",
        "version",
        "type",
        "api_key",
        "request_id",
        "actor",
    ]
    assert len(rows) == len(purchase["stored"])
    assert all(purchase["request_id"] in row and purchase["key_name"] in row for row in rows)
    events = _linjerum(settings, "events", f"event-{purchase['event_id']}", "--table")
    assert "SeatsHeld" in events.stdout


def test_help_of_each_command(settings: Settings) -> None:
    for command in ("events", "audit"):
        assert "--table" in _linjerum(settings, command, "--help").stdout


@pytest.fixture(scope="module")
async def seat_sale(api, pool: asyncpg.Pool, catalog) -> dict:
    """Seats A2 and A3 of a free event sold in one purchase (paid at once, tickets issued)
    through the API with a known request id."""
    token, event_id, type_id = await small_event(pool, 5, price=0, stripe_account=None)
    scheduled = await pool.fetchrow(
        "SELECT (data->>'organization_id')::bigint AS org,"
        " (data->'ticket_types'->0->'section_ids'->>0)::bigint AS section"
        " FROM events WHERE stream_id = $1 AND type = 'EventScheduled'",
        f"event-{event_id}",
    )
    org_slug = await pool.fetchval(
        "SELECT data->>'slug' FROM events WHERE stream_id = $1", f"organization-{scheduled['org']}"
    )
    key = await pool.fetchrow("SELECT id, name FROM api_keys ORDER BY id DESC LIMIT 1")
    request_id = f"seat-{uuid.uuid4().hex[:8]}"
    seats = [{"section_id": scheduled["section"], "row": "A", "seat_number": n} for n in (2, 3)]
    body = order(type_id, 2, selected_seats={str(type_id): seats})
    _, created = await post(
        api, token, "/api/v1/purchases", body, 201, **{"X-Request-ID": request_id}
    )
    purchase = created["purchase"]
    [ticket] = [t for t in purchase["tickets"] if t["seat"]["seat_number"] == 2]
    return {
        "event_id": event_id,
        "org": org_slug,
        "key_id": key["id"],
        "key_name": key["name"],
        "request_id": request_id,
        "purchase": purchase["token"],
        "ticket_id": ticket["id"],
    }


def test_who_sold_a_seat_in_one_command(settings: Settings, seat_sale: dict) -> None:
    event = str(seat_sale["event_id"])
    found = _lines(_linjerum(settings, "audit", "--seat", "A2", "--event", event))
    assert {e["purchase_token"] for e in found} == {seat_sale["purchase"]}
    [held] = [e for e in found if e["type"] == "SeatsHeld"]
    assert held["stream_id"] == f"event-{event}"
    assert (held["api_key_id"], held["api_key_name"]) == (
        seat_sale["key_id"],
        seat_sale["key_name"],
    )
    assert held["request_id"] == seat_sale["request_id"]
    assert {"PurchaseOpened", "PurchasePaid", "TicketIssued"} <= {e["type"] for e in found}
    # Only the ticket of seat A2, not the purchase's other ticket (A3).
    tickets = {e["stream_id"] for e in found if e["stream_id"].startswith("ticket-")}
    assert tickets == {f"ticket-{seat_sale['ticket_id']}"}
    times = [e["recorded_at"] for e in found]
    assert times == sorted(times)

    by_slug = _linjerum(
        settings, "audit", "--seat", "A2", "--event", "show", "--org", seat_sale["org"]
    )
    assert _lines(by_slug) == found
    table = _linjerum(settings, "audit", "--seat", "A2", "--event", event, "--table")
    assert table.stdout.splitlines()[0].split()[-1] == "purchase"
    assert seat_sale["purchase"] in table.stdout


async def test_seat_questions_that_have_no_answer(
    settings: Settings, pool: asyncpg.Pool, seat_sale: dict
) -> None:
    event = str(seat_sale["event_id"])
    assert _lines(_linjerum(settings, "audit", "--seat", "A4", "--event", event)) == []
    # Every test organization has an event `show`: the slug alone names several.
    await small_event(pool, 1)
    several = _linjerum(settings, "audit", "--seat", "A2", "--event", "show", status=1)
    assert "give --org" in several.stderr
    _linjerum(settings, "audit", "--seat", "A2", "--event", "no-such-event", status=1)
    _linjerum(settings, "audit", "--seat", "A2", status=2)
    # A seat that is no seat is named as such, not as a missing --event.
    malformed = _linjerum(settings, "audit", "--seat", "ZZ", "--event", "show", status=2)
    assert "'ZZ' is no seat" in malformed.stderr
    alone = _linjerum(settings, "audit", "--event", "show", status=2)
    assert "give --seat like A12 together with --event" in alone.stderr


def test_a_seats_history_takes_the_audit_filters(settings: Settings, seat_sale: dict) -> None:
    event = str(seat_sale["event_id"])
    seat = ("audit", "--seat", "A2", "--event", event)
    whole = _lines(_linjerum(settings, *seat))
    assert {e["type"] for e in whole} >= {"SeatsHeld", "TicketIssued"}
    held = _lines(_linjerum(settings, *seat, "--type", "SeatsHeld"))
    assert held and {e["type"] for e in held} == {"SeatsHeld"}
    tickets = _lines(_linjerum(settings, *seat, "--category", "ticket"))
    assert tickets and {e["stream_id"].split("-")[0] for e in tickets} == {"ticket"}
    assert _lines(_linjerum(settings, *seat, "--since", "2099-01-01T00:00:00Z")) == []
    assert _lines(_linjerum(settings, *seat, "--limit", "1")) == whole[-1:]
    by_request = _lines(_linjerum(settings, *seat, "--request-id", seat_sale["request_id"]))
    assert by_request and all(e["request_id"] == seat_sale["request_id"] for e in by_request)
    assert _lines(_linjerum(settings, *seat, "--key", str(seat_sale["key_id"] + 999))) == []
