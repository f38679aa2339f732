"""Expires purchases that were never paid, giving their seats, places and discount uses back,
and forgets idempotency keys older than a day."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import structlog

from domain.errors import DomainError
from infra import idempotency
from infra.eventstore import ConcurrencyError, Metadata
from infra.supervise import OUTAGES, dependency_of
from services.usecases.purchase_endings import Endings
from services.usecases.purchases import Purchases

log = structlog.get_logger(__name__)

SWEEPER = Metadata(actor="sweeper")
PURGE_EVERY = 3600.0


async def sweep_once(endings: Endings) -> int:
    """Expire everything due now; returns how many purchases were expired. A purchase paid,
    cancelled or expired by someone else meanwhile is a race lost, not a fault: it is told at
    info, and the next sweep sees what became of it."""
    expired = 0
    for token in await endings.due_for_expiry(datetime.now(UTC)):
        try:
            expired += await endings.expire(token, SWEEPER)
        except ConcurrencyError:
            log.info("expiry_lost_race", token=token)
        except DomainError as exc:
            log.info("expiry_refused", token=token, error=exc.detail)
    return expired


async def run_sweeper(purchases: Purchases, interval: float = 5.0) -> None:
    purged_at = 0.0
    while True:
        try:
            expired = await sweep_once(purchases.endings)
            if expired:
                log.info("purchases_expired", count=expired)
            if time.monotonic() - purged_at > PURGE_EVERY:
                await idempotency.purge(purchases.pool)
                purged_at = time.monotonic()
            OUTAGES.up("postgresql")
        except Exception as exc:
            dependency = dependency_of(exc)
            if dependency is None:
                log.exception("sweep_failed")
            else:
                OUTAGES.down(dependency, exc, worker="sweeper")
        await asyncio.sleep(interval)
