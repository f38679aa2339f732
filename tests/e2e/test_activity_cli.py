"""`linjerum activity` as a partner's admin runs it: JSON lines, newest first, filtered by key
and time, and an unknown organization refused. Runs against a database of its own, seeded with
the demo data, so the seed does not disturb tests that count what seeding creates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from services.api.activity import ActivityEntry, ActivityLog
from services.dev.demo_catalog import DEMO_ORGANIZATION
from services.usecases.catalog_commands import organization_id_by_slug
from tests.e2e.conftest import demo_database

LINJERUM = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
async def seeded_database(servers: tuple[str, str]) -> AsyncIterator[str]:
    """The url of a fresh, migrated database with the demo organizations and some activity."""
    admin_url, _ = servers
    async with demo_database(admin_url, "activity") as (url, pool):
        organization_id = await organization_id_by_slug(pool, DEMO_ORGANIZATION)
        assert organization_id is not None
        log = ActivityLog(pool)
        now = datetime.now(UTC)
        for request_id, key, ago in (
            ("old", 1, timedelta(hours=3)),
            ("recent-1", 1, timedelta(minutes=20)),
            ("recent-2", 2, timedelta(minutes=2)),
        ):
            log.record(
                ActivityEntry(
                    recorded_at=now - ago,
                    organization_id=organization_id,
                    api_key_id=key,
                    method="POST",
                    path="/api/v1/purchases",
                    status=201,
                    duration_ms=12.5,
                    request_id=request_id,
                )
            )
        log.record(
            ActivityEntry(
                recorded_at=now,
                organization_id=organization_id + 10_000,
                api_key_id=3,
                method="GET",
                path="/api/v1/events",
                status=200,
                duration_ms=1.0,
                request_id="another-org",
            )
        )
        await log.close()
        yield url


def _activity(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env["DATABASE_URL"] = database_url
    env["LINJERUM_LOG_LEVEL"] = "warning"
    return subprocess.run(
        [*LINJERUM, "activity", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_activity_prints_json_lines_newest_first(seeded_database: str) -> None:
    shown = _activity(seeded_database, "--org", DEMO_ORGANIZATION, "--since", "1h")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [line["request_id"] for line in lines] == ["recent-2", "recent-1"]
    first = lines[0]
    assert first["method"] == "POST"
    assert first["path"] == "/api/v1/purchases"
    assert first["status"] == 201
    assert first["duration_ms"] == 12.5
    assert first["api_key_id"] == 2
    assert first["recorded_at"].endswith("Z")


def test_activity_filters_by_key_time_and_limit(seeded_database: str) -> None:
    def ids(*args: str) -> list[str]:
        shown = _activity(seeded_database, "--org", DEMO_ORGANIZATION, *args)
        assert shown.returncode == 0, shown.stderr
        return [json.loads(line)["request_id"] for line in shown.stdout.splitlines()]

    assert ids() == ["recent-2", "recent-1", "old"]
    assert ids("--key", "1") == ["recent-1", "old"]
    assert ids("--key", "1", "--since", "30m") == ["recent-1"]
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids("--since", since) == ["recent-2", "recent-1"]
    assert ids("--limit", "1") == ["recent-2"]


def test_an_unknown_organization_or_bad_since_is_refused(seeded_database: str) -> None:
    unknown = _activity(seeded_database, "--org", "no-such-org")
    assert unknown.returncode == 1
    assert "no-such-org" in unknown.stderr
    assert unknown.stdout == ""

    bad = _activity(seeded_database, "--org", DEMO_ORGANIZATION, "--since", "yesterday")
    assert bad.returncode == 2
    assert "--since" in bad.stderr
