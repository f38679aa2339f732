"""`linjerum events` and `linjerum audit`: who changed what, as JSON lines or a table an
operator reads in a terminal."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import msgspec

from infra.eventstore import AuditedEvent, audit, stream_history
from services.usecases.catalog_commands import organization_id_by_slug

_TABLE = ("recorded_at", "stream_id", "version", "type", "api_key", "request_id", "actor")


class AuditLine(msgspec.Struct, frozen=True, kw_only=True):
    """One event and who caused it, flat, as `linjerum events` and `audit` print it."""

    recorded_at: datetime
    stream_id: str
    version: int
    type: str
    api_key_id: int | None
    api_key_name: str | None
    request_id: str | None
    actor: str | None
    causation_id: str | None
    correlation_id: str | None
    data: msgspec.Raw


def _line(audited: AuditedEvent) -> AuditLine:
    event, metadata = audited.event, audited.event.metadata
    return AuditLine(
        recorded_at=event.recorded_at,
        stream_id=event.stream_id,
        version=event.version,
        type=event.type,
        api_key_id=metadata.api_key_id,
        api_key_name=audited.api_key_name,
        request_id=metadata.request_id,
        actor=metadata.actor,
        causation_id=metadata.causation_id,
        correlation_id=metadata.correlation_id,
        data=event.data,
    )


def _cells(line: AuditLine) -> list[str]:
    key = "" if line.api_key_id is None else f"{line.api_key_id} {line.api_key_name or ''}".strip()
    return [
        line.recorded_at.isoformat(timespec="seconds"),
        line.stream_id,
        str(line.version),
        line.type,
        key,
        line.request_id or "",
        line.actor or "",
    ]


def _print(events: list[AuditedEvent], table: bool) -> None:
    lines = [_line(e) for e in events]
    if not table:
        for line in lines:
            print(msgspec.json.encode(line).decode(), flush=True)
        return
    rows = [list(_TABLE), *(_cells(line) for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def add_commands(add_parser: Any, since: Any, positive: Any) -> None:
    """The two commands' parsers; `since` and `positive` are the CLI's argument types."""
    events = add_parser("events", help="a stream's history: every event, who caused it, its data")
    events.add_argument("stream", help="stream id, e.g. event-12, purchase-<token>")
    events.add_argument("--table", action="store_true", help="a readable table, without data")

    found = add_parser(
        "audit",
        help="who changed what: events newest first, filtered",
        description="Stored events newest first with who caused them. --org keeps the events "
        "the organization's API keys caused.",
    )
    found.add_argument("--org", default=None, help="organization slug")
    found.add_argument("--key", type=int, default=None, help="API key id")
    found.add_argument("--request-id", default=None, help="the X-Request-ID of a partner call")
    found.add_argument("--category", default=None, help="stream category: event, purchase, ...")
    found.add_argument("--type", default=None, help="event type, e.g. SeatsHeld")
    found.add_argument("--since", type=since, default=None, help="ISO-8601 time or 15m, 2h, 1d")
    found.add_argument("--until", type=since, default=None, help="ISO-8601 time or 15m, 2h, 1d")
    found.add_argument("--limit", type=positive, default=100)
    found.add_argument("--table", action="store_true", help="a readable table, without data")


async def run(args: argparse.Namespace, pool: Any) -> int:
    if args.command == "events":
        _print(await stream_history(pool, args.stream), args.table)
        return 0
    organization_id = None
    if args.org is not None:
        organization_id = await organization_id_by_slug(pool, args.org)
        if organization_id is None:
            print(f"no organization with slug {args.org!r}", file=sys.stderr)
            return 1
    found = await audit(
        pool,
        organization_id=organization_id,
        api_key_id=args.key,
        request_id=args.request_id,
        category=args.category,
        type_name=args.type,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    _print(found, args.table)
    return 0
