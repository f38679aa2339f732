"""What an operator reads in an outage: one warning when a server stops answering, one when it
answers again (with how long it was away), and nothing per retry in between; a sweeper that
loses a race to a buyer says so at info."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import asyncpg
import structlog

from domain.errors import DomainError
from infra.eventstore import ConcurrencyError
from infra.supervise import OUTAGES, Outages, dependency_of, serve_forever
from services.api.errors import unavailable
from services.workers.sweeper import sweep_once


def _warnings(logs: list[dict]) -> list[dict]:
    return [line for line in logs if line["log_level"] in ("warning", "error", "critical")]


def test_errors_are_told_apart_by_the_server_they_come_from() -> None:
    import nats.errors

    assert dependency_of(ConnectionRefusedError(111, "refused")) == "postgresql"
    assert dependency_of(asyncpg.exceptions.AdminShutdownError("restart")) == "postgresql"
    left = asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation")
    assert dependency_of(left) == "postgresql"
    assert unavailable(left)  # 503 with Retry-After, not a 500
    assert dependency_of(nats.errors.TimeoutError()) == "nats"
    assert dependency_of(nats.errors.NoRespondersError()) == "nats"
    try:
        try:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("gone")
        except Exception as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert dependency_of(wrapped) == "postgresql"
    assert dependency_of(KeyError("a bug")) is None
    # A row the database refuses is no outage: a read model failing on it is told each time.
    assert dependency_of(asyncpg.exceptions.NumericValueOutOfRangeError("bigint")) is None
    assert dependency_of(asyncpg.exceptions.UniqueViolationError("dup")) is None


async def test_an_outage_is_one_warning_at_start_and_one_with_its_length_at_end() -> None:
    outages = Outages()
    with structlog.testing.capture_logs() as logs:
        assert outages.down("postgresql", ConnectionRefusedError(111, "refused"), worker="relay")
        for _ in range(10):
            assert not outages.down("postgresql", ConnectionRefusedError(111, "refused"))
        await asyncio.sleep(0.2)
        outages.up("postgresql")
        outages.up("postgresql")
    assert [(w["event"], w["dependency"]) for w in _warnings(logs)] == [
        ("outage_started", "postgresql"),
        ("outage_ended", "postgresql"),
    ]
    assert logs[0]["worker"] == "relay" and "refused" in logs[0]["error"]
    assert logs[-1]["seconds"] >= 0.2


async def test_a_probe_ends_the_outage_when_the_server_answers_again() -> None:
    outages = Outages()
    answering = False

    async def probe() -> None:
        if not answering:
            raise ConnectionRefusedError(111, "refused")

    outages.watch("postgresql", probe)
    with structlog.testing.capture_logs() as logs:
        outages.down("postgresql", "refused")
        await asyncio.sleep(0.7)
        assert outages.is_down("postgresql")
        answering = True
        for _ in range(40):
            if not outages.is_down("postgresql"):
                break
            await asyncio.sleep(0.1)
    outages.close()
    assert [w["event"] for w in _warnings(logs)] == ["outage_started", "outage_ended"]


async def test_a_worker_retrying_through_an_outage_logs_no_warning_per_retry() -> None:
    """Before: a `relay_retrying` warning for every attempt, twice a second."""
    attempts = 0

    async def serve() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError(111, "Connect call failed")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            serve_forever(serve, "relay", first_pause=0.01, longest_pause=0.02)
        )
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        OUTAGES.up("postgresql")
    assert attempts > 5
    assert [w["event"] for w in _warnings(logs)] == ["outage_started", "outage_ended"]
    assert not [line for line in logs if "exc_info" in line]


async def test_a_worker_failing_on_a_bug_still_warns_each_time() -> None:
    async def serve() -> None:
        raise KeyError("a bug")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(serve_forever(serve, "relay", first_pause=0.01))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len([w for w in _warnings(logs) if w["event"] == "relay_retrying"]) >= 2


class _Racing:
    """Unpaid purchases' endings as the sweeper sees them when buyers get there first: one paid
    meanwhile (its stream moved), one already ended, one still to expire."""

    pool = None

    async def due_for_expiry(self, now: datetime) -> list[str]:
        return ["paid-meanwhile", "ended-meanwhile", "due"]

    async def expire(self, token: str, meta: object) -> bool:
        if token == "paid-meanwhile":
            raise ConcurrencyError("purchase-paid-meanwhile", "expected version 2")
        if token == "ended-meanwhile":
            raise DomainError("the purchase has already ended")
        return True


async def test_a_sweeper_that_loses_a_race_says_so_at_info() -> None:
    with structlog.testing.capture_logs() as logs:
        assert await sweep_once(_Racing()) == 1  # type: ignore[arg-type]
    assert not _warnings(logs)
    told = {line["token"]: (line["event"], line["log_level"]) for line in logs}
    assert told["paid-meanwhile"] == ("expiry_lost_race", "info")
    assert told["ended-meanwhile"] == ("expiry_refused", "info")
