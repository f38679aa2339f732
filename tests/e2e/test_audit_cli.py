"""`linjerum events` and `linjerum audit` as an operator runs them after a partner's purchase:
the request id and the API key lead from the HTTP call to the events it stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import asyncpg
import pytest

from infra.settings import Settings
from tests.e2e.conftest import bearer, order, small_event

LINJERUM = [sys.executable, "-m", "services.cli"]


def _linjerum(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env["DATABASE_URL"] = settings.database_url
    env["LINJERUM_LOG_LEVEL"] = "warning"
    shown = subprocess.run(
        [*LINJERUM, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert shown.returncode == 0, shown.stderr
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
