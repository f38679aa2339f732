"""The event store as the operators' tools read it: who caused what (`linjerum audit`), the
history of one seat, ranges of the global order for `linjerum replay`, and how far a reader is
behind (`/readyz`). Kept apart from the store's appends and reads, which the sale depends on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from infra.eventstore import COLUMNS, START, Position, RecordedEvent, recorded
from infra.global_order import AFTER, IN_ORDER, NEWEST_FIRST, SELECT_POSITION


class Backlog(msgspec.Struct, frozen=True):
    """Committed events after a position, counted up to a limit, and the age in seconds of the
    oldest of them (None when there is none)."""

    events: int
    oldest_seconds: float | None


_BACKLOG = (
    "SELECT count(*) AS events, extract(epoch FROM clock_timestamp() - min(recorded_at))"
    " AS seconds FROM (SELECT recorded_at FROM events WHERE {only} "
    + AFTER
    + " ORDER BY {order} LIMIT $3) e"
)
_BACKLOG_ALL = _BACKLOG.format(only="", order="tx_id, position")
# Written as the category index's expression, so the scan starts at the position.
_BACKLOG_OF_CATEGORY = _BACKLOG.format(
    only="split_part(stream_id, '-', 1) = $4 AND",
    order="split_part(stream_id, '-', 1), tx_id, position",
)


async def backlog(
    conn: asyncpg.Connection | asyncpg.Pool,
    after: Position,
    limit: int,
    category: str | None = None,
) -> Backlog:
    """The committed events after `after`, settled or not (only those of `category`, if given):
    how far a reader that has handled everything up to `after` is behind."""
    point = (str(after.tx_id), after.position, limit)
    row = await (
        conn.fetchrow(_BACKLOG_ALL, *point)
        if category is None
        else conn.fetchrow(_BACKLOG_OF_CATEGORY, *point, category)
    )
    seconds = row["seconds"]
    return Backlog(row["events"], None if seconds is None else float(seconds))


class AuditedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A stored event with the name of the API key that caused it, for operators' questions."""

    event: RecordedEvent
    api_key_name: str | None


_AUDITED = (
    f"SELECT {COLUMNS}, k.name AS api_key_name FROM events"
    " LEFT JOIN api_keys k ON k.id = (metadata->>'api_key_id')::bigint "
)


# `{0}` twice: the organization's id.
_OF_ORGANIZATION = (
    "(k.organization_id = ${0} OR (SELECT (o.data->>'organization_id')::bigint FROM events o"
    " WHERE o.stream_id = events.stream_id AND o.version = 1) = ${0})"
)


def _audited(rows: Sequence[asyncpg.Record]) -> list[AuditedEvent]:
    return [AuditedEvent(event=recorded(r), api_key_name=r["api_key_name"]) for r in rows]


async def stream_history(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str
) -> list[AuditedEvent]:
    """A stream's events in version order, each with who caused it."""
    rows = await conn.fetch(_AUDITED + "WHERE stream_id = $1 ORDER BY version", stream_id)
    return _audited(rows)


async def audit(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    organization_id: int | None = None,
    api_key_id: int | None = None,
    request_id: str | None = None,
    correlation_id: str | None = None,
    category: str | None = None,
    type_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[AuditedEvent]:
    """Events newest first, filtered by who caused them and what they are. An organization's
    events are those of its streams (each stream's first event names its organization: the
    payments, tickets, expiries and plan changes that workers and the command line made for it
    too) and those its API keys caused."""
    filters = (
        (_OF_ORGANIZATION, organization_id),
        ("(metadata->>'api_key_id')::bigint = ${}", api_key_id),
        ("metadata->>'request_id' = ${}", request_id),
        ("metadata->>'correlation_id' = ${}", correlation_id),
        ("split_part(stream_id, '-', 1) = ${}", category),
        ("type = ${}", type_name),
        ("recorded_at >= ${}", since),
        ("recorded_at < ${}", until),
    )
    where: list[str] = []
    args: list[object] = []
    for condition, value in filters:
        if value is not None:
            args.append(value)
            where.append(condition.format(len(args)))
    args.append(limit)
    sql = (
        _AUDITED
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + f"ORDER BY recorded_at DESC, tx_id DESC, position DESC LIMIT ${len(args)}"
    )
    return _audited(await conn.fetch(sql, *args))


async def last_recorded(
    conn: asyncpg.Connection | asyncpg.Pool, moment: datetime, *, inclusive: bool
) -> Position:
    """The last event in global order recorded before `moment` (or at it, if `inclusive`):
    where a range given by time starts after, or ends; START when there is none."""
    row = await conn.fetchrow(
        SELECT_POSITION
        + f"WHERE recorded_at {'<=' if inclusive else '<'} $1 {NEWEST_FIRST} LIMIT 1",
        moment,
    )
    return Position(row["tx_id"], row["position"]) if row else START


async def event_id_before(conn: asyncpg.Connection | asyncpg.Pool, after: Position) -> str | None:
    """The id of the event at `after` or the last one before it: the message a republish of
    the events after `after` expects the NATS stream to end with."""
    return await conn.fetchval(
        "SELECT event_id::text FROM events WHERE (tx_id, position) <= ($1::text::xid8, $2)"
        f" {NEWEST_FIRST} LIMIT 1",
        str(after.tx_id),
        after.position,
    )


class RangeSummary(msgspec.Struct, frozen=True):
    """The events of a range of the global order: how many of each type, the first and last."""

    types: dict[str, int]
    first: Position | None
    last: Position | None

    @property
    def events(self) -> int:
        return sum(self.types.values())


async def range_summary(
    conn: asyncpg.Connection | asyncpg.Pool,
    after: Position,
    up_to: Position,
    categories: Sequence[str] | None = None,
) -> RangeSummary:
    """Events after `after` up to `up_to` (only of `categories`, if given), counted by type."""
    where = f"WHERE {AFTER} AND (tx_id, position) <= ($3::text::xid8, $4)"
    args: list[object] = [str(after.tx_id), after.position, str(up_to.tx_id), up_to.position]
    if categories is not None:
        args.append(list(categories))
        where += " AND split_part(stream_id, '-', 1) = ANY($5)"
    counted = await conn.fetch(
        f"SELECT type, count(*) AS n FROM events {where} GROUP BY type", *args
    )
    ends = [
        await conn.fetchrow(f"{SELECT_POSITION}{where} {order} LIMIT 1", *args)
        for order in (IN_ORDER, NEWEST_FIRST)
    ]
    first, last = (Position(r["tx_id"], r["position"]) if r else None for r in ends)
    return RangeSummary({r["type"]: r["n"] for r in counted}, first, last)


class SeatEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event in the history of one seat, and the purchase it belongs to."""

    audited: AuditedEvent
    purchase_token: str


# A seat's holds, releases and returns on its event's stream; the whole stream of each purchase
# that held it; and the stream of the ticket issued for that seat by such a purchase.
_SEAT_HISTORY = f"""
WITH seat_events AS (
    SELECT event_id, data->>'purchase_token' AS token FROM events
    WHERE stream_id = $1 AND data->'seats' @> $2::jsonb
), purchases AS (
    SELECT DISTINCT $4 || token AS stream_id, token FROM seat_events
), tickets AS (
    SELECT $5 || (t->>'id') AS stream_id, p.token FROM purchases p
    JOIN events o ON o.stream_id = p.stream_id AND o.version = 1
    CROSS JOIN LATERAL jsonb_array_elements(o.data->'tickets') AS t
    WHERE t->'seat' @> $3::jsonb
), found AS (
    SELECT e.event_id, s.token FROM seat_events s JOIN events e USING (event_id)
    UNION ALL SELECT e.event_id, p.token FROM purchases p JOIN events e USING (stream_id)
    UNION ALL SELECT e.event_id, t.token FROM tickets t JOIN events e USING (stream_id)
)
SELECT {COLUMNS}, k.name AS api_key_name, found.token AS purchase_token
FROM found JOIN events USING (event_id)
LEFT JOIN api_keys k ON k.id = (metadata->>'api_key_id')::bigint
ORDER BY recorded_at, tx_id, position
"""


async def seat_history(
    conn: asyncpg.Connection | asyncpg.Pool,
    event_stream: str,
    seat: dict[str, object],
    purchase_prefix: str,
    ticket_prefix: str,
) -> list[SeatEvent]:
    """Everything that happened to one seat of an event, oldest first: the holds, releases and
    returns naming it, the purchases that held it, and the tickets issued for it. `seat` is a
    part of a seat's JSON (`row` and `seat_number`, and `section_id` if known); the prefixes
    make a purchase's and a ticket's stream id of their ids."""
    pattern = msgspec.json.encode(seat).decode()
    rows = await conn.fetch(
        _SEAT_HISTORY, event_stream, f"[{pattern}]", pattern, purchase_prefix, ticket_prefix
    )
    return [
        SeatEvent(
            audited=AuditedEvent(event=recorded(r), api_key_name=r["api_key_name"]),
            purchase_token=r["purchase_token"],
        )
        for r in rows
    ]


async def claimed_owners(
    conn: asyncpg.Connection | asyncpg.Pool, claims_category: str, kind: str, key: str
) -> list[int]:
    """The ids that claimed natural key `key` of `kind` in any scope (an event slug in every
    organization that has one), from the claim streams of `claims_category`."""
    rows = await conn.fetch(
        "SELECT (data->>'owner_id')::bigint AS owner FROM events"
        " WHERE split_part(stream_id, '-', 1) = $1 AND version = 1"
        " AND data->>'kind' = $2 AND data->>'key' = $3 ORDER BY owner",
        claims_category,
        kind,
        key,
    )
    return [r["owner"] for r in rows]
