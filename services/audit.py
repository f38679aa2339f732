"""`linjerum events` and `linjerum audit`: who changed what, as JSON lines or a table an
operator reads in a terminal."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from domain import streams
from domain.catalog import claim_stream
from domain.events import Event
from infra.event_history import AuditedEvent, audit, claimed_owners, seat_history, stream_history
from infra.eventstore import RecordedEvent
from services.replay import label
from services.usecases.catalog_commands import organization_id_by_slug, owner_of

_TABLE = ("recorded_at", "stream_id", "version", "type", "api_key", "request_id", "actor")


class AuditLine(msgspec.Struct, frozen=True, kw_only=True):
    """One event and who caused it, flat, as `linjerum events` and `audit` print it."""

    recorded_at: datetime
    stream_id: str
    version: int
    type: str
    event_id: str
    position: str | None  # tx_id:position in the global order, as `replay --from` takes it
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
        event_id=event.event_id,
        position=label(event.global_position),
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


class SeatLine(AuditLine, frozen=True, kw_only=True):
    """An event of one seat's history, and the purchase it concerns."""

    purchase_token: str


def _seat_cells(line: AuditLine) -> list[str]:
    assert isinstance(line, SeatLine)
    return [*_cells(line), line.purchase_token]


def _print(
    lines: Sequence[AuditLine],
    table: bool,
    columns: Sequence[str] = _TABLE,
    cells: Callable[[AuditLine], list[str]] = _cells,
) -> None:
    if not table:
        for line in lines:
            print(msgspec.json.encode(line).decode(), flush=True)
        return
    rows = [list(columns), *(cells(line) for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
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
        "of the organization's streams and those its API keys caused.",
    )
    found.add_argument("--org", default=None, help="organization slug")
    found.add_argument("--key", type=positive, default=None, help="API key id")
    found.add_argument("--request-id", default=None, help="the X-Request-ID of a partner call")
    found.add_argument(
        "--correlation",
        default=None,
        metavar="REQUEST_ID",
        help="a request id: every event of the chain it started, the workers' too",
    )
    found.add_argument("--category", default=None, help="stream category: event, purchase, ...")
    found.add_argument("--type", default=None, help="event type, e.g. SeatsHeld")
    found.add_argument("--since", type=since, default=None, help="ISO-8601 time or 15m, 2h, 1d")
    found.add_argument("--until", type=since, default=None, help="ISO-8601 time or 15m, 2h, 1d")
    found.add_argument("--limit", type=positive, default=100)
    found.add_argument("--table", action="store_true", help="a readable table, without data")
    found.add_argument(
        "--seat",
        default=None,
        metavar="SEAT",
        help="with --event: the history of one seat, oldest first: A12 (row A, seat 12), 3-12 "
        "for a numbered row, 7/A12 in section 7 only; the other filters apply, --limit keeps "
        "the newest",
    )
    found.add_argument(
        "--event", default=None, help="with --seat: event id or slug (--org if several have it)"
    )


# Every stream category: the aggregates' and the slug claims' (domain/catalog.py `claim_stream`).
CATEGORIES = (
    streams.ORGANIZATION,
    streams.VENUE,
    streams.EVENT,
    streams.ATTRACTION,
    streams.DISCOUNT,
    streams.PURCHASE,
    streams.TICKET,
    streams.TRANSFER,
    streams.REFUND_REQUEST,
    streams.API_KEY,
    "slug",
)


def _unknown_filter(args: argparse.Namespace) -> str | None:
    """A --category or --type no event can have: a typo, not an empty answer."""
    if args.category is not None and args.category not in CATEGORIES:
        return f"no stream category {args.category!r} (one of {', '.join(CATEGORIES)})"
    if args.type is not None and args.type not in Event.registry:
        close = difflib.get_close_matches(args.type, Event.registry, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"no event type {args.type!r}{hint}"
    return None


async def run(args: argparse.Namespace, pool: Any) -> int:
    if args.command == "events":
        history = await stream_history(pool, args.stream)
        if not history:  # as `state` says it: a typo is not an empty history
            print(f"linjerum events: no stream {args.stream}", file=sys.stderr)
            return 1
        _print([_line(e) for e in history], args.table)
        return 0
    unknown = _unknown_filter(args)
    if unknown is not None:
        print(f"linjerum audit: {unknown}", file=sys.stderr)
        return 2
    organization_id = None
    if args.org is not None:
        organization_id = await organization_id_by_slug(pool, args.org)
        if organization_id is None:
            print(
                f"linjerum {args.command}: no organization with slug {args.org!r}", file=sys.stderr
            )
            return 1
    if args.seat is not None or args.event is not None:
        return await _seat(args, pool, organization_id)
    found = await audit(
        pool,
        organization_id=organization_id,
        api_key_id=args.key,
        request_id=args.request_id,
        correlation_id=args.correlation,
        category=args.category,
        type_name=args.type,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    _print([_line(e) for e in found], args.table)
    return 0


def _passes(event: RecordedEvent, args: argparse.Namespace) -> bool:
    """The filters of `audit` on one event of a seat's history, as `audit` applies them in SQL:
    a seat's history is short, so it is read whole and filtered here."""
    meta = event.metadata
    wanted = (
        (args.key, meta.api_key_id),
        (args.request_id, meta.request_id),
        (args.correlation, meta.correlation_id),
        (args.category, streams.category(event.stream_id)),
        (args.type, event.type),
    )
    return (
        all(want is None or want == have for want, have in wanted)
        and (args.since is None or event.recorded_at >= args.since)
        and (args.until is None or event.recorded_at < args.until)
    )


_SEAT = re.compile(r"^(?:(\d+)/)?(.+?)[-\s]?(\d+)$")


def _seat_pattern(label: str) -> dict[str, object] | None:
    """`A12` → row A, seat 12 (any section); `3-12` → row 3, seat 12; `7/A12` → in section 7."""
    match = _SEAT.match(label.strip())
    if match is None:
        return None
    section, row, number = match.groups()
    pattern: dict[str, object] = {"row": row, "seat_number": int(number)}
    if section is not None:
        pattern["section_id"] = int(section)
    return pattern


async def _event_ids(pool: Any, event: str, organization_id: int | None) -> list[int]:
    """The events an id or slug names: a slug is unique within an organization only."""
    if event.isascii() and event.isdigit() and len(event) <= 18:
        return [int(event)]
    if organization_id is not None:
        owner = await owner_of(pool, claim_stream("event", event, organization_id))
        return [] if owner is None else [owner]
    claims = streams.category(claim_stream("event", event, 0))
    return await claimed_owners(pool, claims, "event", event)


async def _seat(args: argparse.Namespace, pool: Any, organization_id: int | None) -> int:
    """Who held, sold, released, refunded and transferred one seat: exit 1 for an event that
    is not found or is ambiguous, 2 for a seat that is not a seat."""
    pattern = None if args.seat is None else _seat_pattern(args.seat)
    if args.seat is None or args.event is None:
        print("linjerum audit: give --seat like A12 together with --event", file=sys.stderr)
        return 2
    if pattern is None:
        print(
            f"linjerum audit: {args.seat!r} is no seat: give one like A12 or 3-12", file=sys.stderr
        )
        return 2
    found = await _event_ids(pool, args.event, organization_id)
    if len(found) != 1:
        which = "no event" if not found else f"{len(found)} events (give --org)"
        print(f"linjerum audit: {which} named {args.event!r}", file=sys.stderr)
        return 1
    history = await seat_history(
        pool, streams.event(found[0]), pattern, streams.purchase(""), f"{streams.TICKET}-"
    )
    kept = [e for e in history if _passes(e.audited.event, args)][-args.limit :]
    lines = [
        SeatLine(**msgspec.structs.asdict(_line(e.audited)), purchase_token=e.purchase_token)
        for e in kept
    ]
    _print(lines, args.table, (*_TABLE, "purchase"), _seat_cells)
    return 0
