"""`linjerum replay` as an operator runs it on a database of its own: a republished range is
dropped by JetStream (nothing stored twice, read models unchanged), an event JetStream no longer
remembers is refused rather than stored out of order, a dry run changes nothing, and re-driving
a read model from a position restores the rows that range produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from infra.bus import ensure_stream
from infra.settings import Settings
from projections.rebuild import rebuild
from projections.registry import all_projections
from services.workers.relay import Relay
from tests.e2e.conftest import demo_database

LINJERUM = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
async def demo(servers: tuple[str, str]) -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    """The demo data in a database of its own, its read models built, on a JetStream stream of
    its own."""
    admin_url, nats_url = servers
    async with demo_database(admin_url, "replay") as (url, pool):
        name = f"linjerum_test_replay_{uuid.uuid4().hex[:8]}"
        settings = Settings(
            database_url=url,
            nats_url=nats_url,
            nats_stream=name.upper(),
            subject_prefix=name.replace("_", "."),
        )
        for projection in all_projections().values():
            await rebuild(pool, projection)
        yield settings, pool


@pytest.fixture
async def js(demo: tuple[Settings, asyncpg.Pool]) -> AsyncIterator[JetStreamContext]:
    """A connection whose streams the test creates and deletes."""
    nc = await nats.connect(demo[0].nats_url)
    yield nc.jetstream()
    await nc.close()


async def _relayed(pool: asyncpg.Pool, js: JetStreamContext, settings: Settings) -> None:
    """Every stored event published by the relay, as in production."""
    relay = Relay(pool, js, settings)
    await ensure_stream(js, settings)
    await relay.reconcile()
    while await relay.publish_pending():
        pass


def _replay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        NATS_URL=settings.nats_url,
        LINJERUM_NATS_STREAM=settings.nats_stream,
        LINJERUM_SUBJECT_PREFIX=settings.subject_prefix,
        LINJERUM_LOG_LEVEL="error",
    )
    return subprocess.run(
        [*LINJERUM, "replay", *args], capture_output=True, text=True, timeout=120, env=env
    )


def _lines(shown: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in shown.stdout.splitlines()]


async def _read_models(pool: asyncpg.Pool) -> dict[str, list[str]]:
    tables = {"availability": "rm_availability.taken_counts", "catalog": "rm_catalog.events"}
    return {
        name: sorted(r[0] for r in await pool.fetch(f"SELECT to_jsonb(t)::text FROM {table} t"))
        for name, table in tables.items()
    } | {"checkpoints": [str(await pool.fetchval("SELECT tx_id FROM rm_catalog.checkpoint"))]}


async def test_republished_range_is_dropped_as_duplicates(
    demo: tuple[Settings, asyncpg.Pool], js: JetStreamContext
) -> None:
    settings, pool = demo
    try:
        await _relayed(pool, js, settings)
        stored = await pool.fetchval("SELECT count(*) FROM events")
        before = (await js.stream_info(settings.nats_stream)).state
        assert before.messages == stored
        models = await _read_models(pool)

        dry = _replay(settings, "--publish", "--since", "1h", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        [plan] = _lines(dry)
        assert plan["events"] == stored and plan["after"] == "0:0"
        assert sum(plan["types"].values()) == stored
        assert (await js.stream_info(settings.nats_stream)).state.last_seq == before.last_seq

        first = await pool.fetchval(
            "SELECT tx_id::text || ':' || position FROM events ORDER BY tx_id, position"
            " OFFSET 5 LIMIT 1"
        )
        again = _replay(settings, "--publish", "--from", first)
        assert again.returncode == 0, again.stderr
        [report] = _lines(again)
        assert report["published"] == stored - 5
        after = (await js.stream_info(settings.nats_stream)).state
        assert (after.messages, after.last_seq) == (before.messages, before.last_seq)
        assert await _read_models(pool) == models
    finally:
        await js.delete_stream(settings.nats_stream)


async def test_event_outside_the_duplicate_window_is_refused_not_stored_twice(
    demo: tuple[Settings, asyncpg.Pool], js: JetStreamContext
) -> None:
    settings, pool = demo
    own = replace(settings, nats_stream=f"{settings.nats_stream}_SHORT")
    own = replace(own, subject_prefix=f"{settings.subject_prefix}.short")
    # A duplicate window that has passed by the time the replay runs (JetStream's minimum is
    # 100 ms; the command alone takes longer than that to start).
    await js.add_stream(
        StreamConfig(
            name=own.nats_stream, subjects=[f"{own.subject_prefix}.>"], duplicate_window=0.1
        )
    )
    try:
        await _relayed(pool, js, own)
        before = (await js.stream_info(own.nats_stream)).state
        refused = _replay(own, "--publish")
        assert refused.returncode == 1, refused.stderr
        assert _lines(refused)[0]["published"] == 0
        assert "refused event" in refused.stderr
        after = (await js.stream_info(own.nats_stream)).state
        assert (after.messages, after.last_seq) == (before.messages, before.last_seq)
    finally:
        await js.delete_stream(own.nats_stream)


async def test_redrive_from_a_position_restores_the_rows_of_that_range(
    demo: tuple[Settings, asyncpg.Pool],
) -> None:
    settings, pool = demo
    scheduled = await pool.fetch(
        "SELECT (data->>'event_id')::bigint AS id, tx_id::text || ':' || position AS at"
        " FROM events WHERE type = 'EventScheduled' ORDER BY tx_id, position"
    )
    early, late = scheduled[0], scheduled[-1]
    original = await pool.fetchval(
        "SELECT to_jsonb(e)::text FROM rm_catalog.events e WHERE id = $1", late["id"]
    )
    await pool.execute("DELETE FROM rm_catalog.events WHERE id = $1", late["id"])
    await pool.execute("UPDATE rm_catalog.events SET name = 'Tampered' WHERE id = $1", early["id"])

    dry = _replay(settings, "--projection", "catalog", "--from", late["at"], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    [plan] = _lines(dry)
    assert plan["first"] == late["at"] and plan["types"]["EventScheduled"] == 1
    assert (
        await pool.fetchval("SELECT count(*) FROM rm_catalog.events WHERE id = $1", late["id"]) == 0
    )

    redriven = _replay(settings, "--projection", "catalog", "--from", late["at"])
    assert redriven.returncode == 0, redriven.stderr
    [report] = _lines(redriven)
    assert report["rows_restored"] == 1 and report["reapplied"] >= 1
    restored = await pool.fetchval(
        "SELECT to_jsonb(e)::text FROM rm_catalog.events e WHERE id = $1", late["id"]
    )
    assert json.loads(restored) == json.loads(original)
    # Rows the range did not produce are left as they are: that is what `rebuild` is for.
    name = await pool.fetchval("SELECT name FROM rm_catalog.events WHERE id = $1", early["id"])
    assert name == "Tampered"

    twice = _replay(settings, "--projection", "catalog", "--from", late["at"])
    assert twice.returncode == 0, twice.stderr
    assert _lines(twice)[0]["rows_restored"] == 0


async def test_a_publish_to_a_time_before_the_range_is_refused(
    demo: tuple[Settings, asyncpg.Pool],
) -> None:
    """As a --to position before --from is: not run as an empty range."""
    last = await demo[1].fetchval(
        "SELECT tx_id::text || ':' || position FROM events ORDER BY tx_id DESC, position DESC"
        " LIMIT 1"
    )
    backwards = _replay(demo[0], "--publish", "--from", last, "--to", "2020-01-01T00:00")
    assert backwards.returncode == 2, backwards.stdout
    assert "is before the range" in backwards.stderr


async def test_a_publish_up_to_before_the_first_event_is_refused(
    demo: tuple[Settings, asyncpg.Pool],
) -> None:
    """A range from the start of the store whose --to is before its first event ran as an empty
    range, exit 0: it names nothing to publish."""
    for to in ("1:1", "2020-01-01T00:00"):
        empty = _replay(demo[0], "--publish", "--since", "3650d", "--to", to)
        assert empty.returncode == 2, (empty.stdout, empty.stderr)
        assert "no event is stored after 0:0 up to --to" in empty.stderr


def test_a_publish_to_a_nats_out_of_reach_fails_in_one_line(
    demo: tuple[Settings, asyncpg.Pool],
) -> None:
    """It waited without a word for as long as NATS stayed away (for ever)."""
    unreachable = replace(demo[0], nats_url="nats://127.0.0.1:1")
    failed = _replay(unreachable, "--publish", "--since", "1h")
    assert failed.returncode == 1, failed.stdout
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith("linjerum replay: cannot use nats: "), line


def test_replay_needs_something_to_do(demo: tuple[Settings, asyncpg.Pool]) -> None:
    assert _replay(demo[0], "--since", "1h").returncode == 2
    assert _replay(demo[0], "--projection", "catalog", "--to", "1h").returncode == 2
    assert _replay(demo[0], "--publish", "--from", "nonsense").returncode == 2
    backwards = _replay(demo[0], "--publish", "--from", "9:1", "--to", "2:1")
    assert (backwards.returncode, backwards.stderr.strip()) == (
        2,
        "linjerum replay: --to is before --from",
    )
    beyond = _replay(demo[0], "--projection", "catalog", "--from", "999999999:1")
    assert beyond.returncode == 1 and "nothing is stored after 999999999:0" in beyond.stderr
