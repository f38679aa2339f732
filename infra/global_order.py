"""The store read in its global order, for the relay, rebuilds and replay: only transactions
that can no longer be overtaken are read (a commit still in flight could sort before what a
reader passed), and where the order stands (its head, an event's position). The fragments of
SQL here are the operators' reports' too (infra/event_history.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
import structlog

from infra.eventstore import SELECT_EVENTS, START, Position, RecordedEvent, recorded

log = structlog.get_logger(__name__)

SELECT_POSITION = "SELECT tx_id::text::bigint AS tx_id, position FROM events "
AFTER = "(tx_id, position) > ($1::text::xid8, $2)"
# The global order, by the table's own columns: a bare `tx_id` in ORDER BY would name the
# selected bigint of the same name, which no index has, and every read would sort every event
# after its position (a relay 200,000 events behind took 150 ms a read instead of 1).
IN_ORDER = "ORDER BY events.tx_id, events.position"
NEWEST_FIRST = "ORDER BY events.tx_id DESC, events.position DESC"
# The safe global order's gate: a transaction older than every one still in flight can no
# longer be overtaken by a commit that would sort before it.
_SETTLED = "tx_id < pg_snapshot_xmin(pg_current_snapshot())"


async def read_all(
    conn: asyncpg.Connection | asyncpg.Pool,
    after: Position = START,
    limit: int = 1000,
    categories: Sequence[str] | None = None,
    up_to: Position | None = None,
) -> list[RecordedEvent]:
    """Events after `after` in global order, only from transactions that can no longer be
    overtaken: anything still in flight, and everything after it, waits for the next read.

    With `up_to`, the caller vouches that everything up to it is already settled (it was read
    through this gate before) and the gate is skipped.
    """
    where = [AFTER]
    args: list[object] = [str(after.tx_id), after.position]
    if up_to is None:
        where.append(_SETTLED)
    else:
        args += [str(up_to.tx_id), up_to.position]
        where.append(f"(tx_id, position) <= (${len(args) - 1}::text::xid8, ${len(args)})")
    if categories is not None:
        args.append(list(categories))
        where.append(f"split_part(stream_id, '-', 1) = ANY(${len(args)})")
    args.append(limit)
    sql = SELECT_EVENTS + "WHERE " + " AND ".join(where) + f" {IN_ORDER} LIMIT ${len(args)}"
    return [recorded(r) for r in await conn.fetch(sql, *args)]


_NEXT_IS_SETTLED = f"SELECT {_SETTLED} FROM events WHERE {AFTER} {IN_ORDER} LIMIT 1"


async def next_is_settled(conn: asyncpg.Connection | asyncpg.Pool, after: Position) -> bool | None:
    """Whether the first event after `after` has passed read_all's gate (a read would return
    it now); None if there is no event after `after`."""
    return await conn.fetchval(_NEXT_IS_SETTLED, str(after.tx_id), after.position)


async def wait_until_settled(
    conn: asyncpg.Connection | asyncpg.Pool, at: Position, poll_seconds: float = 0.02
) -> None:
    """Until every transaction up to `at`'s has ended, so read_all returns every event up to it.
    The gate's horizon is the whole server's: a long transaction in another database holds it
    back too, and a rebuild waits for it (saying so) rather than leave events out."""
    waited_since = time.monotonic()
    warned = waited_since
    while not await conn.fetchval(_IS_SETTLED, str(at.tx_id)):
        now = time.monotonic()
        if now - warned >= 10:
            warned = now
            log.warning("waiting_for_transactions_in_flight", seconds=round(now - waited_since))
        await asyncio.sleep(poll_seconds)


_IS_SETTLED = "SELECT $1::text::xid8 < pg_snapshot_xmin(pg_current_snapshot())"


async def head(conn: asyncpg.Connection | asyncpg.Pool) -> Position:
    """The last event in global order, settled or not (for progress reporting and tests)."""
    row = await conn.fetchrow(f"{SELECT_POSITION}{NEWEST_FIRST} LIMIT 1")
    return Position(row["tx_id"], row["position"]) if row else START


async def position_of(conn: asyncpg.Connection | asyncpg.Pool, event_id: str) -> Position | None:
    """Where an event stands in the global order; None for an id the store does not have."""
    row = await conn.fetchrow(SELECT_POSITION + "WHERE event_id = $1::uuid", event_id)
    return Position(row["tx_id"], row["position"]) if row else None
