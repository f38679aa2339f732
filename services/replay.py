"""`linjerum replay`: re-publish a range of the event store to NATS JetStream, and re-drive read
models from a position.

Re-publishing uses the relay's own publishing, so each message carries the relay's headers
(`Nats-Msg-Id` = event id, `Nats-Expected-Last-Msg-Id` = the event before it): JetStream drops
what it saw within its duplicate window and refuses anything that would not follow the stream's
last message, so the stream never holds an event twice or out of order. Only what the relay has
already published is re-published.

Re-driving cannot move a read model's checkpoint back and let the projector apply again: most
applies are not idempotent (availability adds counts, the catalog inserts rows). It replays the
projection into a scratch schema up to the position, copies that, replays the rest of the range
up to the live checkpoint (under the projection's lock), and writes into the live tables exactly
the rows the range changed, where the live row differs. Running it twice changes nothing more.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from nats.js import JetStreamContext
from tqdm import tqdm

from infra.bus import connect, ensure_stream, jetstream
from infra.changes import announce, read_model_channel
from infra.event_history import RangeSummary, event_id_before, last_recorded, range_summary
from infra.eventstore import START, Position, RecordedEvent
from infra.global_order import head, read_all
from infra.settings import Settings
from projections.framework import (
    Projection,
    live_schema,
    lock_key,
    read_checkpoint,
)
from projections.rebuild import (
    BATCH,
    Replayed,
    catch_up_to_live,
    events_to_replay,
    fresh_replay,
    no_progress,
    taking_turns,
)
from projections.registry import all_projections
from projections.verify import Difference, compare, tables
from services.health import relay_position
from services.servers import connected, database
from services.workers.relay import Checkpoint, Relay, acked_prefix

_POSITION = re.compile(r"^(\d+):(\d+)$")


def position(value: str) -> Position:
    """`tx_id:position`, as the command prints positions."""
    if match := _POSITION.match(value.strip()):
        return Position(int(match.group(1)), int(match.group(2)))
    raise argparse.ArgumentTypeError(f"{value!r} is not a position like 1234:56 (tx_id:position)")


def label(at: Position | None) -> str | None:
    return None if at is None else f"{at.tx_id}:{at.position}"


def _position_or_time(since: Callable[[str], datetime]) -> Callable[[str], Position | datetime]:
    def parse(value: str) -> Position | datetime:
        return position(value) if _POSITION.match(value.strip()) else since(value)

    return parse


def add_commands(add_parser: Any, since: Callable[[str], datetime]) -> None:
    """The command's parser; `since` is the CLI's time type (ISO-8601 or a duration ago)."""
    replay = add_parser(
        "replay",
        help="re-publish events to NATS, re-drive read models from a position",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start = replay.add_mutually_exclusive_group()
    start.add_argument(
        "--from", dest="start", type=position, help="first event of the range, tx_id:position"
    )
    start.add_argument(
        "--since", type=since, default=None, help="events recorded from: ISO-8601 or 15m, 2h, 1d"
    )
    replay.add_argument(
        "--to",
        type=_position_or_time(since),
        default=None,
        help="last event re-published: tx_id:position or a time (default: the relay's)",
    )
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--projection", choices=sorted(all_projections()), default=None)
    which.add_argument("--all-projections", action="store_true", help="re-drive every read model")
    replay.add_argument("--publish", action="store_true", help="re-publish the range to NATS")
    replay.add_argument(
        "--dry-run", action="store_true", help="print what would be done, change nothing"
    )
    replay.add_argument("--quiet", action="store_true", help="no progress bar")


class _Republisher(Relay):
    """The relay's publishing over a chosen range, with a checkpoint of its own that it never
    stores: the first message expects the event before the range as the stream's last."""

    def __init__(
        self, pool: asyncpg.Pool, js: JetStreamContext, settings: Settings, previous: str | None
    ) -> None:
        super().__init__(pool, js, settings, name="replay")
        self._sent = Checkpoint(START, previous)

    async def republish(self, batch: list[RecordedEvent]) -> int:
        """How many of the batch JetStream acknowledged, in order (stored or dropped as a
        duplicate); the rest were refused."""
        acked = await acked_prefix(await self._send(batch))
        if acked:
            last = batch[acked - 1]
            self._sent = Checkpoint(last.global_position, last.event_id)
        return acked


class Redriven(msgspec.Struct, frozen=True):
    reapplied: int
    rows_restored: int


async def _restore(conn: asyncpg.Connection, live: str, table: str, changed: Difference) -> int:
    """Make the live row of `changed.key` what the replay made it; 1 if it was not already."""
    target = f'{live}."{table}"'
    same = " AND ".join(f't."{c}" IS NOT DISTINCT FROM r."{c}"' for c in changed.key)
    keyed = f"jsonb_populate_record(NULL::{target}, $1::jsonb) r WHERE {same}"
    key = json.dumps(changed.key)
    current = await conn.fetchval(f"SELECT to_jsonb(t)::text FROM {target} t, {keyed}", key)
    if (None if current is None else json.loads(current)) == changed.rebuilt:
        return 0
    await conn.execute(f"DELETE FROM {target} t USING {keyed}", key)
    if changed.rebuilt is not None:
        await conn.execute(
            f"INSERT INTO {target} SELECT * FROM jsonb_populate_record(NULL::{target}, $1::jsonb)",
            json.dumps(changed.rebuilt),
        )
    return 1


async def redrive(
    pool: asyncpg.Pool,
    projection: Projection,
    after: Position,
    on_replayed: Replayed = no_progress,
) -> Redriven:
    """Apply the projection's events after `after` again, up to its live checkpoint, and put
    the rows they produce into the live tables (see the module's docstring)."""
    live = live_schema(projection)
    replayed, at_start = f"{live}__redrive", f"{live}__redrive_from"
    async with pool.acquire() as conn, taking_turns(conn, projection):
        try:
            target = await read_checkpoint(conn, live)
            await fresh_replay(conn, projection, replayed, on_replayed, up_to=min(after, target))
            await conn.execute(f"DROP SCHEMA IF EXISTS {at_start} CASCADE")
            await conn.execute(f"CREATE SCHEMA {at_start}")
            replayed_tables = await tables(conn, replayed)
            for table in replayed_tables:
                await conn.execute(
                    f'CREATE TABLE {at_start}."{table}" AS TABLE {replayed}."{table}"'
                )
            async with conn.transaction():
                # Held until the rows are written: the live tables cannot move past the replay.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(projection))
                reapplied = await catch_up_to_live(conn, projection, replayed, on_replayed)
                restored = 0
                for table in replayed_tables:
                    for changed in await compare(conn, table, at_start, replayed):
                        restored += await _restore(conn, live, table, changed)
                if restored:
                    await announce(conn, read_model_channel(projection.name))
            return Redriven(reapplied, restored)
        finally:
            for schema in (replayed, at_start):
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _print_json(value: Any) -> None:
    print(msgspec.json.encode(value).decode(), flush=True)


def _summary(summary: RangeSummary) -> dict[str, Any]:
    return {
        "events": summary.events,
        "first": label(summary.first),
        "last": label(summary.last),
        "types": dict(sorted(summary.types.items())),
    }


def _bar(args: argparse.Namespace, total: int, desc: str) -> tqdm:
    disable = args.quiet or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="ev", file=sys.stderr, disable=disable)


async def _republish(
    pool: asyncpg.Pool,
    js: JetStreamContext,
    live: Settings,
    after: Position,
    end: Position,
    on_published: Callable[[int], object],
) -> tuple[int, RecordedEvent | None]:
    """Publish the events after `after` up to `end` in order; how many JetStream acknowledged,
    and the event it refused (None when none)."""
    await ensure_stream(js, live)
    previous = await event_id_before(pool, after)
    stream_empty = not (await js.stream_info(live.nats_stream)).state.messages
    first = await read_all(pool, after, 1, up_to=end)
    if previous is None and first and not stream_empty:
        # The store's first event carries no order header: it goes to an empty stream only.
        after, previous = first[0].global_position, first[0].event_id
    republisher = _Republisher(pool, js, live, previous)
    published = 0
    while batch := await read_all(pool, after, BATCH, up_to=end):
        acked = await republisher.republish(batch)
        published += acked
        on_published(acked)
        if acked < len(batch):
            return published, batch[acked]
        after = batch[-1].global_position
    return published, None


async def _publish(
    args: argparse.Namespace, live: Settings, pool: asyncpg.Pool, after: Position
) -> int:
    """Exit status 1 when JetStream refused an event (neither a duplicate nor the stream's
    next message); what came before it was published."""
    end = await relay_position(pool)
    if isinstance(args.to, datetime):
        bound = await last_recorded(pool, args.to, inclusive=True)
        if bound < after:  # as a --to position before --from is (`run`)
            print(
                f"linjerum replay: --to {args.to.isoformat()} is before the range, which starts"
                f" after {label(after)}",
                file=sys.stderr,
            )
            return 2
        end = min(end, bound)
    elif args.to is not None:
        end = min(end, args.to)
    summary = await range_summary(pool, after, end)
    if args.to is not None and not summary.events:  # a --to before the range's first event
        print(
            f"linjerum replay: no event is stored after {label(after)} up to --to"
            f" {label(args.to) if isinstance(args.to, Position) else args.to.isoformat()}",
            file=sys.stderr,
        )
        return 2
    shown = {"publish": live.nats_stream, "after": label(after), "to": label(end)}
    if args.dry_run:
        _print_json({**shown, **_summary(summary)})
        return 0
    nc = await connect(live, "replay", patient=False)
    try:
        with _bar(args, summary.events, "publish") as bar:
            published, refused = await _republish(pool, jetstream(nc), live, after, end, bar.update)
    finally:
        await nc.close()
    _print_json({**shown, "published": published})
    if refused is None:
        return 0
    print(
        f"linjerum replay: JetStream refused event {refused.event_id} at"
        f" {label(refused.global_position)}: it is neither within the duplicate window nor"
        " the stream's next message; nothing after it was published",
        file=sys.stderr,
    )
    return 1


async def _redrive_all(args: argparse.Namespace, pool: asyncpg.Pool, after: Position) -> None:
    chosen = sorted(all_projections()) if args.all_projections else [args.projection]
    for name in chosen:
        projection = all_projections()[name]
        checkpoint = await read_checkpoint(pool, live_schema(projection))
        shown = {"projection": name, "after": label(after), "to": label(checkpoint)}
        if args.dry_run:
            summary = await range_summary(pool, after, checkpoint, projection.categories)
            _print_json({**shown, **_summary(summary)})
            continue
        with _bar(args, await events_to_replay(pool, projection), name) as bar:
            redriven = await redrive(pool, projection, after, bar.update)
        _print_json({**shown, **msgspec.structs.asdict(redriven)})


async def _start(args: argparse.Namespace, pool: asyncpg.Pool) -> Position:
    """The position the range starts after: just before --from, or the last event recorded
    before --since."""
    if args.start is not None:
        return Position(args.start.tx_id, args.start.position - 1)
    if args.since is not None:
        return await last_recorded(pool, args.since, inclusive=False)
    return START


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 2 for a request that names nothing to do, 1 when JetStream refused."""
    redriving = args.projection is not None or args.all_projections
    if not (args.publish or redriving):
        print(
            "linjerum replay: give --publish, --projection NAME or --all-projections",
            file=sys.stderr,
        )
        return 2
    if args.to is not None and not args.publish:
        print(
            "linjerum replay: --to bounds --publish; a re-drive ends at the read model's"
            " checkpoint",
            file=sys.stderr,
        )
        return 2
    if isinstance(args.to, Position) and args.start is not None and args.to < args.start:
        print("linjerum replay: --to is before --from", file=sys.stderr)
        return 2
    nats = args.publish and not args.dry_run
    async with connected(settings, nats=nats) as live, database(live) as pool:
        after = await _start(args, pool)
        newest = await head(pool)
        if args.start is not None and after >= newest:  # a position past the end: a typo
            print(
                f"linjerum replay: nothing is stored after {label(after)} (the newest event"
                f" is at {label(newest)})",
                file=sys.stderr,
            )
            return 1
        status = await _publish(args, live, pool, after) if args.publish else 0
        if redriving and status == 0:
            await _redrive_all(args, pool, after)
        return status
