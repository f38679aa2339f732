"""Snapshot benchmark: how soon a sales desk that starts cold (a new gateway, the sweeper, a desk
after a failure) on a 100,000-event inventory stream can decide, with and without a snapshot.

    .venv/bin/python bench/snapshots.py                # embedded servers under .linjerum-bench/
    DATABASE_URL=... .venv/bin/python bench/snapshots.py --events 100000 --rounds 5

One event on a venue of --rows x --seats-per-row seats sells out, with buyers letting holds
expire all along: each stored event holds two free seats for a new purchase or, when the venue
is full or one time in three, releases an earlier hold. The stream is appended in blocks before
the clock starts. A round times a new desk (`services/usecases/desk.py`) from nothing to its
state caught up with the stream plus one decision on it (`holds.hold_seats`): once folding the
whole stream (snapshots off), once from the snapshot a desk wrote and the events after it.
Rounds alternate the two; the medians are printed, and the cost of writing a snapshot, which a
desk pays in the background every SNAPSHOT_EVERY events. Target: under 1 s with a snapshot.

The database is the run's own and removed at the end; every loop is bounded in count, the
rounds also by --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from harness.report import verdict
from harness.setup import META, bench_settings, create_event

from domain import streams, venues
from domain.events import Event
from domain.inventory import holds
from domain.inventory.events import HeldSeat, SeatsHeld, SeatsReleased
from infra import snapshots
from infra.db import create_pool, migrate
from infra.eventstore import PendingAppend, append, read_stream
from infra.logging import configure_logging
from services.usecases.catalog_cache import Catalog
from services.usecases.desk import Desk
from services.usecases.sales_desks import EVENT_INVENTORY

BLOCK = 2000
TARGET_SECONDS = 1.0


def _on_sale_events(
    event_id: int, type_id: int, section: venues.Section, count: int, seed: int
) -> list[Event]:
    """`count` holds and releases of two seats each, the venue filling up as they go."""
    rng = random.Random(seed)
    free = [(row.identifier, n) for row in section.rows for n in range(row.start, row.end + 1)]
    rng.shuffle(free)
    active: list[SeatsHeld] = []
    expires = datetime.now(UTC) + timedelta(minutes=30)
    events: list[Event] = []
    for _ in range(count):
        if active and (len(free) < 2 or rng.random() < 1 / 3):
            hold = active.pop(rng.randrange(len(active)))
            free.extend((s.row, s.seat_number) for s in hold.seats)
            events.append(
                SeatsReleased(
                    event_id=event_id,
                    purchase_token=hold.purchase_token,
                    seats=hold.seats,
                    counts=hold.counts,
                    reason="expired",
                )
            )
            continue
        seats = [
            HeldSeat(section_id=section.id, row=row, seat_number=n, ticket_type_id=type_id)
            for row, n in (free.pop(), free.pop())
        ]
        hold = SeatsHeld(
            event_id=event_id,
            purchase_token=uuid.uuid4().hex,
            seats=seats,
            counts={type_id: 2},
            expires_at=expires,
        )
        active.append(hold)
        events.append(hold)
    return events


async def _build_stream(
    pool: asyncpg.Pool, args: argparse.Namespace
) -> tuple[str, int, list[venues.Section]]:
    """The event on sale and its stream grown to about --events events; returns the stream,
    the ticket type and the seat map."""
    event = await create_event(
        pool,
        rows=args.rows,
        seats_per_row=args.seats_per_row,
        price_cents=10_000,
        stripe_account=None,
    )
    sections = await Catalog(pool).sections_of_event(event.event_id)
    stream = streams.event(event.event_id)
    version = len(await read_stream(pool, stream))
    events = _on_sale_events(
        event.event_id, event.ticket_type_id, sections[0], args.events - version, seed=7
    )
    for start in range(0, len(events), BLOCK):
        block = events[start : start + BLOCK]
        version = (await append(pool, [PendingAppend(stream, version, block)], META))[stream]
    return stream, event.ticket_type_id, sections


async def _cold_start(
    pool: asyncpg.Pool,
    stream: str,
    snapshot_every: int,
    decide: Callable[[holds.EventInventory], None],
) -> tuple[float, Desk[holds.EventInventory]]:
    """Seconds from a new desk to one decision on its caught-up state."""
    started = time.perf_counter()
    desk = Desk(pool, stream, EVENT_INVENTORY, snapshot_every=snapshot_every)
    await desk.ready()
    decide(desk.cached.state)
    return time.perf_counter() - started, desk


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    async with bench_settings(args.data_dir, "snapshots", nats=False) as settings:
        pool = await create_pool(settings.database_url, size=4)
        try:
            await migrate(pool)
            built = time.perf_counter()
            stream, type_id, sections = await _build_stream(pool, args)
            build_seconds = time.perf_counter() - built
            length = len(await read_stream(pool, stream))
            now = datetime.now(UTC)

            def decide(state: holds.EventInventory) -> None:
                # Sold out is a decision all the same.
                with contextlib.suppress(holds.InsufficientAvailability):
                    holds.hold_seats(
                        state,
                        sections,
                        token="bench",
                        quantities={type_id: 1},
                        selected={},
                        now=now,
                        expires_at=now + timedelta(minutes=30),
                    )

            # The snapshot a desk writes after folding the stream, as in production.
            _, writer = await _cold_start(pool, stream, snapshots.SNAPSHOT_EVERY, decide)
            codec = snapshots.EventInventoryCodec()
            async with asyncio.timeout(120):
                while await snapshots.load(pool, stream, codec) is None:
                    await asyncio.sleep(0.05)
            await writer.close()
            encoded_at = time.perf_counter()
            data = codec.encode(writer.cached.state)
            encode_seconds = time.perf_counter() - encoded_at
            decoded_at = time.perf_counter()
            codec.decode(data)
            decode_seconds = time.perf_counter() - decoded_at
            await pool.execute("DELETE FROM snapshots WHERE stream_id = $1", stream)
            saved_at = time.perf_counter()
            await snapshots.save(pool, stream, length, data, codec)
            save_seconds = time.perf_counter() - saved_at

            without: list[float] = []
            with_snapshot: list[float] = []
            deadline = time.monotonic() + args.max_seconds
            for _ in range(args.rounds):
                if time.monotonic() > deadline:
                    break
                seconds, full = await _cold_start(pool, stream, 0, decide)
                without.append(seconds)
                seconds, fast = await _cold_start(pool, stream, snapshots.SNAPSHOT_EVERY, decide)
                with_snapshot.append(seconds)
                same = fast.cached.state == full.cached.state
                assert same and fast.snapshots.started_from > 0, "the snapshot's state differs"
                for desk in (full, fast):
                    await desk.close()
        finally:
            await pool.close()
    cold, warm = statistics.median(without), statistics.median(with_snapshot)
    print(
        f"stream: {length} events ({args.rows} x {args.seats_per_row} seats), "
        f"appended in {build_seconds:.1f} s; rounds: {len(without)}"
    )
    print(
        f"snapshot: {len(data) / 1e6:.1f} MB of JSON, encoded in {encode_seconds * 1000:.0f} ms,"
        f" stored in {save_seconds * 1000:.0f} ms (in the background, every"
        f" {snapshots.SNAPSHOT_EVERY} events); decoded in {decode_seconds * 1000:.0f} ms"
    )
    print(f"cold desk to its first decision, folding the stream  {cold:6.2f} s (median)")
    print(
        f"cold desk to its first decision, from the snapshot   {warm:6.2f} s (median)"
        f"   target < {TARGET_SECONDS:.0f} s: {verdict(warm < TARGET_SECONDS)}"
    )
    print(
        "  by round (fold / snapshot): "
        + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(without, with_snapshot, strict=True))
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seats-per-row", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--data-dir", default=".linjerum-bench")
    asyncio.run(main(parser.parse_args()))
