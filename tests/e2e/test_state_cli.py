"""`linjerum state` as an operator runs it after a sale: an event's inventory, a purchase and a
ticket folded by their own aggregates, now and as of a moment before the sale, and the event's
availability then as the availability endpoint answers it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from infra.settings import Settings
from tests.e2e.conftest import (
    BUYER,
    bearer,
    order,
    post,
    rebuild_read_models,
    small_attraction,
    small_event,
)

LINJERUM = [sys.executable, "-m", "services.cli"]


def _state(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env["DATABASE_URL"] = settings.database_url
    env["LINJERUM_LOG_LEVEL"] = "warning"
    return subprocess.run(
        [*LINJERUM, "state", *args], capture_output=True, text=True, timeout=60, env=env
    )


def _shown(settings: Settings, *args: str) -> dict:
    shown = _state(settings, *args)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.fixture(scope="module")
async def sale(api, pool: asyncpg.Pool, catalog) -> dict:
    """Seats A2 and A3 of a free five-seat event bought through the API (paid at once), and
    the moment just before."""
    token, event_id, type_id = await small_event(pool, 5, price=0, stripe_account=None)
    stream = f"event-{event_id}"
    section = await pool.fetchval(
        "SELECT (data->'ticket_types'->0->'section_ids'->>0)::bigint FROM events"
        " WHERE stream_id = $1 AND type = 'EventScheduled'",
        stream,
    )
    before = await pool.fetchval("SELECT max(recorded_at) FROM events WHERE stream_id = $1", stream)
    seats = [{"section_id": section, "row": "A", "seat_number": n} for n in (2, 3)]
    body = order(type_id, 2, selected_seats={str(type_id): seats})
    _, created = await post(api, token, "/api/v1/purchases", body, 201)
    await rebuild_read_models(pool)
    return {
        "token": token,
        "stream": stream,
        "type_id": type_id,
        "seats": seats,
        "before": before.isoformat(),
        "purchase": created["purchase"],
    }


async def test_event_inventory_now_matches_the_availability_endpoint(
    api, settings: Settings, sale: dict
) -> None:
    shown = _shown(settings, sale["stream"])
    holds = shown["state"]["holds"]
    assert list(holds) == [sale["purchase"]["token"]]
    assert sorted(s["seat_number"] for s in holds[sale["purchase"]["token"]]["seats"]) == [2, 3]
    assert shown["state"]["taken_per_type"] == {str(sale["type_id"]): 2}
    response = await api.get("/api/v1/events/show/availability", headers=bearer(sale["token"]))
    assert response.status == 200
    assert shown["availability"] == await response.json()
    assert shown["availability"]["ticket_types"] == {str(sale["type_id"]): 3}


async def test_an_attraction_day_now_and_before_matches_its_availability_endpoint(
    api, pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    """An attraction's inventory with the availability answer for a visit day, as the endpoint
    gives it with `?date=`, now and as of before the visit was bought; without --date, the
    answer without one."""
    token, type_id = await small_attraction(pool, price=0, daily_max=10, stripe_account=None)
    day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    stream = await pool.fetchval(
        "SELECT stream_id FROM events WHERE type = 'AttractionOpened' ORDER BY tx_id DESC LIMIT 1"
    )
    before = await pool.fetchval("SELECT max(recorded_at) FROM events WHERE stream_id = $1", stream)
    body = {"attraction_slug": "museum", "quantities": {str(type_id): 3}, "visit_date": day}
    await post(api, token, "/api/v1/purchases", body | {"buyer": BUYER}, 201)
    await rebuild_read_models(pool)
    for at, remaining in ((None, 7), (before.isoformat(), 10)):
        args = [stream, "--date", day] + ([] if at is None else ["--as-of", at])
        shown = _shown(settings, *args)
        assert shown["availability"]["date_remaining"] == remaining
        if at is None:
            answer = await api.get(
                f"/api/v1/attractions/museum/availability?date={day}", headers=bearer(token)
            )
            assert shown["availability"] == await answer.json()
    undated = await api.get("/api/v1/attractions/museum/availability", headers=bearer(token))
    assert _shown(settings, stream)["availability"] == await undated.json()
    table = _state(settings, stream, "--table").stdout  # it printed "UNSET: UNSET left"
    assert "UNSET" not in table and "availability:" in table


def test_as_of_before_the_sale_shows_every_seat_free(settings: Settings, sale: dict) -> None:
    shown = _shown(settings, sale["stream"], "--as-of", sale["before"])
    assert shown["state"]["holds"] == {} and shown["state"]["taken_seats"] == 0
    assert shown["availability"]["ticket_types"] == {str(sale["type_id"]): 5}
    assert shown["availability"]["sold_seats"] == []
    assert shown["availability"]["status"] == "available"
    now = _shown(settings, sale["stream"])
    assert shown["version"] < now["version"]


def test_purchase_and_ticket_states(settings: Settings, sale: dict) -> None:
    purchase = _shown(settings, f"purchase-{sale['purchase']['token']}")
    assert purchase["state"]["status"] == "paid"
    assert len(purchase["state"]["opened"]["tickets"]) == 2
    ticket_id = sale["purchase"]["tickets"][0]["id"]
    ticket = _shown(settings, f"ticket-{ticket_id}")
    assert ticket["state"]["issued"]["seat"]["row"] == "A"
    assert ticket["state"]["scan_count"] == 0
    assert "availability" not in ticket or ticket["availability"] is None


def test_table_and_refusals(settings: Settings, sale: dict) -> None:
    table = _state(settings, sale["stream"], "--table")
    assert table.returncode == 0, table.stderr
    assert "availability: available" in table.stdout
    assert f"ticket type {sale['type_id']}: 3 available" in table.stdout
    unknown = _state(settings, f"event-{uuid.uuid4().int % 10**9 + 10**9}")
    assert unknown.returncode == 1 and "no stream" in unknown.stderr
    no_fold = _state(settings, "organization-1")
    assert no_fold.returncode == 1 and "linjerum events" in no_fold.stderr
    early = _state(settings, sale["stream"], "--as-of", "2001-01-01")
    assert early.returncode == 1 and "no events up to" in early.stderr
    bad_time = _state(settings, sale["stream"], "--as-of", "last tuesday")
    assert bad_time.returncode == 2 and "--as-of" in bad_time.stderr
    bad_day = _state(settings, sale["stream"], "--date", "2026-13-01")
    assert bad_day.returncode == 2 and "is no day like" in bad_day.stderr
