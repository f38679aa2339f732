"""A long-running process started while PostgreSQL cannot be reached waits for it and goes on
once it answers (a child of `linjerum run` restarted during an outage must not fail each restart
until the run gives up on it); a command an operator types fails at once."""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import urlsplit

import pytest

from infra.settings import Settings
from services.servers import database
from tests.servers import CuttableProxy, through


@pytest.fixture
def unreachable(settings: Settings) -> tuple[CuttableProxy, Settings]:
    """Settings whose database sits behind a proxy that does not listen yet."""
    url = urlsplit(settings.database_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5432)
    return proxy, dataclasses.replace(
        settings, database_url=through(settings.database_url, proxy.port)
    )


async def test_a_process_started_during_an_outage_waits_for_the_database(
    unreachable: tuple[CuttableProxy, Settings],
) -> None:
    proxy, settings = unreachable

    async def serve() -> int:
        async with database(settings, waiting=True) as pool:
            return await pool.fetchval("SELECT count(*) FROM schema_migrations")

    started = asyncio.create_task(serve())
    await asyncio.sleep(2.0)
    assert not started.done()
    await proxy.restore()
    try:
        assert await asyncio.wait_for(started, 15) > 0
    finally:
        await proxy.cut()


async def test_a_command_fails_at_once_during_an_outage(
    unreachable: tuple[CuttableProxy, Settings],
) -> None:
    _, settings = unreachable
    with pytest.raises(OSError):
        async with asyncio.timeout(10), database(settings):
            pass
