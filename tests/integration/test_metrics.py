"""Metrics an operator alerts on, against the real event store: a lost optimistic race counts
as a conflict, and /metrics measures on scrape how far the relay and a read model are behind
and how many e-mails wait in the outbox."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from infra.eventstore import NO_STREAM, ConcurrencyError, Metadata, PendingAppend, append
from infra.mail_outbox import enqueue
from projections.framework import ensure_live_schema
from services.health import Readiness, add_metrics_route
from services.workers.mailer import MAIL_OUTBOX
from tests.integration.sample_projection import TallyCounted, TallyProjection

META = Metadata(actor="test")


def _counted(name: str, category: str) -> float:
    return REGISTRY.get_sample_value(name, {"category": category}) or 0.0


@pytest.mark.parametrize("streams", [1, 2], ids=["one stream", "two streams"])
async def test_a_lost_append_race_counts_one_conflict(pool: asyncpg.Pool, streams: int) -> None:
    """Both append paths (one plain statement; append_events for several streams)."""
    run = uuid.uuid4().hex[:8]
    ids = [f"tally-{run}{i}" for i in range(streams)]

    def opening() -> list[PendingAppend]:
        return [PendingAppend(s, NO_STREAM, [TallyCounted(amount=1)]) for s in ids]

    conflicts = _counted("linjerum_eventstore_append_conflicts_total", "tally")
    appends = _counted("linjerum_eventstore_appends_total", "tally")
    timed = REGISTRY.get_sample_value(
        "linjerum_eventstore_append_duration_seconds_count", {"category": "tally"}
    )
    await append(pool, opening(), META)
    with pytest.raises(ConcurrencyError):
        await append(pool, opening(), META)
    assert _counted("linjerum_eventstore_append_conflicts_total", "tally") == conflicts + 1
    assert _counted("linjerum_eventstore_appends_total", "tally") == appends + 2
    assert (
        REGISTRY.get_sample_value(
            "linjerum_eventstore_append_duration_seconds_count", {"category": "tally"}
        )
        == (timed or 0) + 2
    )


async def _scrape(readiness: Readiness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    app = web.Application()
    add_metrics_route(app, readiness)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_measure_lag_and_outbox_depth_when_scraped(pool: asyncpg.Pool) -> None:
    await ensure_live_schema(pool, TallyProjection)
    await append(
        pool,
        [PendingAppend(f"tally-{uuid.uuid4().hex[:8]}", NO_STREAM, [TallyCounted(amount=1)])],
        META,
    )
    token = f"metrics-{uuid.uuid4().hex}"
    assert await enqueue(pool, token, "confirmation")
    readiness = Readiness(pool, relay=True, projections=[TallyProjection], outboxes=[MAIL_OUTBOX])
    seen = await _scrape(readiness)
    # No relay or projector runs on this database: the event waits for both.
    assert seen[("linjerum_relay_lag_events", frozenset({("relay", "main")}))] >= 1
    assert seen[("linjerum_relay_lag_seconds", frozenset({("relay", "main")}))] >= 0
    tally = frozenset({("projection", "tally")})
    assert seen[("linjerum_projection_lag_events", tally)] >= 1
    mail = frozenset({("outbox", "mail_outbox")})
    queued = seen[("linjerum_outbox_depth", mail)]
    assert queued >= 1

    await pool.execute("UPDATE mail_outbox SET sent_at = now() WHERE purchase_token = $1", token)
    assert (await _scrape(readiness))[("linjerum_outbox_depth", mail)] == queued - 1
