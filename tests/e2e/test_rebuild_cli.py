"""`linjerum rebuild --all` and `--verify` as an operator runs them: every read model rebuilt,
a verify of untouched models silent with status 0, and a tampered live row reported, exactly
that row, with status 1 and the live row left as it was (no swap)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.e2e.conftest import demo_database

LINJERUM = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
async def seeded_database(servers: tuple[str, str]) -> AsyncIterator[str]:
    """A fresh database with the demo data, so tampering disturbs no other test."""
    admin_url, _ = servers
    async with demo_database(admin_url, "rebuild") as (url, _pool):
        yield url


def _rebuild(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env["DATABASE_URL"] = database_url
    env["LINJERUM_LOG_LEVEL"] = "warning"
    return subprocess.run(
        [*LINJERUM, "rebuild", *args], capture_output=True, text=True, timeout=120, env=env
    )


async def test_rebuild_all_then_verify_finds_exactly_the_tampered_row(seeded_database: str) -> None:
    rebuilt = _rebuild(seeded_database, "--all")
    assert rebuilt.returncode == 0, rebuilt.stderr
    reports = [json.loads(line) for line in rebuilt.stdout.splitlines()]
    assert len(reports) > 1 and sum(r["replayed"] for r in reports) > 0

    clean = _rebuild(seeded_database, "--all", "--verify")
    assert (clean.returncode, clean.stdout) == (0, ""), clean.stderr
    assert "linjerum rebuild: catalog equals its replay" in clean.stderr

    conn = await asyncpg.connect(seeded_database)
    try:
        row = await conn.fetchrow("SELECT id, name FROM rm_catalog.events LIMIT 1")
        await conn.execute(
            "UPDATE rm_catalog.events SET name = 'Tampered' WHERE id = $1", row["id"]
        )
        tampered = _rebuild(seeded_database, "catalog", "--verify")
        assert tampered.returncode == 1, tampered.stderr
        assert "linjerum rebuild: catalog 1 rows differ" in tampered.stderr
        [difference] = [json.loads(line) for line in tampered.stdout.splitlines()]
        assert difference["projection"] == "catalog"
        assert difference["table"] == "events"
        assert difference["key"] == {"id": row["id"]}
        assert difference["live"]["name"] == "Tampered"
        assert difference["rebuilt"]["name"] == row["name"]
        live_name = await conn.fetchval(
            "SELECT name FROM rm_catalog.events WHERE id = $1", row["id"]
        )
        assert live_name == "Tampered"
    finally:
        await conn.close()
    assert _rebuild(seeded_database).returncode == 2
