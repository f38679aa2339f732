"""Real PostgreSQL and NATS for every test: the servers named by DATABASE_URL / NATS_URL, else
the local ones on their standard ports, else the embedded ones. Each test run gets its own
database and its own JetStream stream, so runs never see each other's data."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from infra.db import create_pool, migrate
from infra.scratch import scratch
from infra.settings import Settings


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def server_folder() -> Iterator[Path]:
    """A folder for an embedded PostgreSQL, outside pytest's own: started as root, the server
    runs as a user of its own that must pass through the folder's parents, and every pytest
    session makes its base folder private again, so a second session run meanwhile would lock
    the first one's server out of its files."""
    with tempfile.TemporaryDirectory(prefix="linjerum-test-") as folder:
        yield Path(folder)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    with server_folder() as folder:
        yield folder


@pytest.fixture(scope="session")
async def servers() -> AsyncIterator[tuple[str, str]]:
    """(admin database url, nats url) of real servers."""
    db_url = os.environ.get("DATABASE_URL") or (
        "postgresql://postgres@127.0.0.1:5432/postgres" if _reachable(5432) else ""
    )
    nats_url = os.environ.get("NATS_URL") or ("nats://127.0.0.1:4222" if _reachable(4222) else "")
    async with contextlib.AsyncExitStack() as stack:
        if not db_url or not nats_url:
            from infra.embedded import embedded_servers

            found = await stack.enter_async_context(
                embedded_servers(
                    stack.enter_context(server_folder()),
                    postgres=not db_url,
                    nats=not nats_url,
                )
            )
            db_url = db_url or found.database_url
            nats_url = nats_url or found.nats_url
        yield db_url, nats_url


@pytest.fixture(scope="session")
async def settings(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory):
    """Settings pointing at a database and a JetStream stream that belong to this run alone."""
    admin_url, nats_url = servers
    data_dir = Path(tmp_path_factory.mktemp("data"))
    shared = Settings(database_url=admin_url, nats_url=nats_url, data_dir=data_dir)
    async with scratch(shared, f"linjerum_test_{uuid.uuid4().hex[:10]}") as own:
        yield own


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url, size=30)
    await migrate(pool)
    yield pool
    await pool.close()
