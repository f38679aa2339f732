"""The index of what was handed out (infra/migrations/0009_handed_out.sql): written in the
transaction of the PurchaseOpened that hands the codes out, gone with it if it rolls back, and
filled from the events already stored when the migration is applied to an existing store."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from importlib import resources

import asyncpg
import pytest

from infra import handed_out

INDEX_MIGRATION = "0009_handed_out.sql"


def _migrations() -> list[tuple[str, str]]:
    files = resources.files("infra.migrations")
    return sorted((e.name, e.read_text()) for e in files.iterdir() if e.name.endswith(".sql"))


async def _migrate_from_index(conn: asyncpg.Connection) -> None:
    """The index's migration and every one after it, as `migrate` would apply them."""
    for name, sql in _migrations():
        if name >= INDEX_MIGRATION:
            await conn.execute(sql)


@pytest.fixture
async def store(servers: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """An event store of its own, migrated up to (not including) the index."""
    admin_url, _ = servers
    database = f"linjerum_handed_out_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    conn = await asyncpg.connect(admin_url.rpartition("/")[0] + f"/{database}")
    try:
        for name, sql in _migrations():
            if name >= INDEX_MIGRATION:
                break
            await conn.execute(sql)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _open(conn: asyncpg.Connection, organization_id: int, email: str) -> dict:
    """A PurchaseOpened as stored (only the fields the index reads), appended the way the
    event store appends."""
    token = uuid.uuid4().hex
    data = {
        "token": token,
        "organization_id": organization_id,
        "access_code": "ACDE3467",
        "buyer": {"name": "Simon", "email": email},
        "tickets": [
            {"id": n, "code": f"CODE{token[:4]}{n:04d}".upper(), "attendee_token": f"tok_{n}"}
            for n in (int(token[:6], 16), int(token[6:12], 16))
        ],
    }
    await conn.execute(
        "SELECT append_events($1, $2, $3, $4, $5, $6::jsonb[], $7)",
        [f"purchase-{token}"],
        [0],
        [uuid.uuid4()],
        [f"purchase-{token}"],
        ["PurchaseOpened"],
        [json.dumps(data)],
        ["{}"],
    )
    return data


async def _found(conn: asyncpg.Connection, opened: dict) -> bool:
    first = opened["tickets"][0]
    rows = await handed_out.ticket_by_code(conn, first["code"].lower())
    if not rows:
        return False
    assert (rows[0]["ticket_id"], rows[0]["purchase_token"]) == (first["id"], opened["token"])
    assert rows[0]["organization_id"] == opened["organization_id"]
    handle = await handed_out.ticket_by_attendee_token(conn, opened["tickets"][1]["attendee_token"])
    assert handle == handed_out.TicketHandle(
        opened["tickets"][1]["id"], opened["token"], opened["organization_id"]
    )
    orders = await handed_out.orders_by_access_code(
        conn, opened["access_code"], opened["organization_id"]
    )
    return handed_out.OrderHandle(opened["token"], opened["buyer"]["email"]) in orders


async def test_the_migration_indexes_what_was_handed_out_before_it(store) -> None:
    before = await _open(store, 7, "Early@Example.com")
    await _migrate_from_index(store)
    assert await _found(store, before)


async def test_the_index_is_written_in_the_appends_own_transaction(store) -> None:
    await _migrate_from_index(store)
    tx = store.transaction()
    await tx.start()
    rolled_back = await _open(store, 7, "a@example.com")
    assert await _found(store, rolled_back)
    await tx.rollback()
    assert not await _found(store, rolled_back)

    first = await _open(store, 7, "a@example.com")
    shared = await _open(store, 7, "b@example.com")
    assert await _found(store, first) and await _found(store, shared)
    assert len(await handed_out.orders_by_access_code(store, "acde3467", 7)) == 2
    assert await handed_out.orders_by_access_code(store, "ACDE3467", 8) == []
