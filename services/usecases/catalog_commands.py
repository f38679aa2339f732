"""Command handlers for the catalog: allocate ids, let the domain decide, and append the events
together with a claim on the natural key, so two writers can never create the same slug."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg

from domain import catalog, discounts, streams, venues
from domain.errors import AlreadyExists, NotFound
from domain.events import Event
from domain.inventory import holds
from infra.eventstore import (
    NO_STREAM,
    ConcurrencyError,
    Metadata,
    PendingAppend,
    append,
    read_stream,
)
from infra.supervise import detached
from projections import catalog as catalog_reads

Pool = asyncpg.Pool | asyncpg.Connection
ID_BLOCK = 2000  # an on-sale's first second or more of tickets; ids never handed out are never used
PLAN_ATTEMPTS = 10


async def allocate_ids(pool: Pool, count: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT nextval('catalog_ids') AS id FROM generate_series(1, $1)", count
    )
    return [r["id"] for r in rows]


class IdReserve:
    """Ids drawn from the sequence a block at a time: a purchase needs one per ticket, and a
    query per purchase for them would be one more round trip on the hottest path. The next
    block is fetched while half of the current one is left, so no purchase waits for it. Ids of
    a block a process never hands out are simply never used."""

    def __init__(self, pool: Pool, block: int = ID_BLOCK) -> None:
        self._pool = pool
        self._block = block
        self._ids: deque[int] = deque()
        self._refill: asyncio.Task[None] | None = None

    async def take(self, count: int) -> list[int]:
        while len(self._ids) < count:
            await self._refilling(max(self._block, count))
        taken = [self._ids.popleft() for _ in range(count)]
        self.prefetch()
        return taken

    def prefetch(self) -> None:
        """Fetch the next block in the background when half of this one is gone."""
        if len(self._ids) < self._block // 2:
            self._refilling(self._block)

    def _refilling(self, count: int) -> asyncio.Task[None]:
        if self._refill is None or self._refill.done():
            self._refill = detached(self._fill(count))
            self._refill.add_done_callback(_retrieved)
        return self._refill

    async def _fill(self, count: int) -> None:
        self._ids.extend(await allocate_ids(self._pool, count))


def _retrieved(task: asyncio.Task[None]) -> None:
    """A refill nobody waited for may fail quietly: the next take() tries again and raises."""
    if not task.cancelled():
        task.exception()


async def owner_of(pool: Pool, claim: str) -> int | None:
    """The id that won a natural key, or None when nobody has claimed it."""
    events = await read_stream(pool, claim)
    if not events:
        return None
    claimed = events[0].event()
    assert isinstance(claimed, catalog.SlugClaimed)
    return claimed.owner_id


async def organization_id_by_slug(pool: Pool, slug: str) -> int | None:
    return await owner_of(pool, catalog.claim_stream("org", slug))


async def load_venue(pool: Pool, venue_id: int) -> venues.VenueRegistered:
    """The venue as registered, with its current plan."""
    return (await _venue_state(pool, venue_id))[0]


async def _venue_state(pool: Pool, venue_id: int) -> tuple[venues.VenueRegistered, int]:
    """The venue and its stream's version."""
    events = await read_stream(pool, streams.venue(venue_id))
    state: venues.VenueRegistered | None = None
    for recorded in events:
        state = venues.evolve_venue(state, recorded.event())
    if state is None:
        raise NotFound(f"venue {venue_id} not found", "venue_id")
    return state, len(events)


async def _create(
    pool: Pool,
    *,
    kind: str,
    key: str,
    organization_id: int | None,
    stream: Callable[[int], str],
    decide: Callable[[int, list[int]], list[Event]],
    extra_ids: int,
    metadata: Metadata,
) -> int:
    """Decide with fresh ids and append the claim and the object's first events atomically.
    A claim that already exists means the key is taken: nothing of this command is stored."""
    owner_id, *more = await allocate_ids(pool, 1 + extra_ids)
    events = decide(owner_id, more)
    claim = catalog.claim_stream(kind, key, organization_id)
    claimed = catalog.SlugClaimed(kind=kind, key=key, owner_id=owner_id)
    try:
        await append(
            pool,
            [
                PendingAppend(claim, NO_STREAM, [claimed]),
                PendingAppend(stream(owner_id), NO_STREAM, events),
            ],
            metadata,
        )
    except ConcurrencyError as exc:
        if exc.stream_id == claim:
            raise AlreadyExists(f"{kind} {key!r} already exists", "slug") from None
        raise
    return owner_id


async def register_organization(
    pool: Pool, cmd: catalog.RegisterOrganization, metadata: Metadata
) -> int:
    return await _create(
        pool,
        kind="org",
        key=cmd.slug,
        organization_id=None,
        stream=streams.organization,
        decide=lambda oid, _: catalog.register_organization(cmd, oid),
        extra_ids=0,
        metadata=metadata,
    )


async def register_venue(
    pool: Pool, organization_id: int, cmd: venues.RegisterVenue, metadata: Metadata
) -> int:
    return await _create(
        pool,
        kind="venue",
        key=cmd.key,
        organization_id=organization_id,
        stream=streams.venue,
        decide=lambda vid, ids: venues.register_venue(cmd, organization_id, vid, ids),
        extra_ids=len(cmd.sections),
        metadata=metadata,
    )


async def change_seat_plan(
    pool: Pool,
    organization_id: int,
    venue_id: int,
    cmd: venues.ChangeSeatPlan,
    metadata: Metadata,
) -> bool:
    """Replaces the venue's sections; False when the plan is the one it has. The seats held
    or sold for the venue's events are read from the events' streams, and the change is stored
    only while each stream is at the version read (a hold stored meanwhile makes it decide
    again), so no seat held a moment ago is planned away; the events at the venue and the
    sections their ticket types sell from are read from the catalog read model."""
    event_ids = await catalog_reads.event_ids_at_venue(pool, venue_id)
    sold_in = {
        section_id: f"ticket type {t.id} ({t.name}) of event {event_id}"
        for event_id in event_ids
        for t in await catalog_reads.ticket_types(pool, event_id=event_id)
        for section_id in t.section_ids
    }
    fresh = await allocate_ids(pool, sum(s.id is None for s in cmd.sections))
    for _ in range(PLAN_ATTEMPTS):
        venue, version = await _venue_state(pool, venue_id)
        if venue.organization_id != organization_id:
            raise NotFound(f"venue {venue_id} not found", "venue_id")
        taken, seen = await _held_seats(pool, event_ids)
        events = venues.change_seat_plan(cmd, venue, fresh, taken, sold_in)
        if not events:
            return False
        unchanged = [PendingAppend(stream, at, []) for stream, at in seen.items()]
        try:
            await append(
                pool,
                [PendingAppend(streams.venue(venue_id), version, events), *unchanged],
                metadata,
            )
        except ConcurrencyError:
            continue
        return True
    raise ConcurrencyError(streams.venue(venue_id), "the venue's events kept selling meanwhile")


async def _held_seats(
    pool: Pool, event_ids: list[int]
) -> tuple[list[tuple[int, str, int]], dict[str, int]]:
    """The seats held or sold for the events, as their streams have them, and each stream's
    version."""
    taken: list[tuple[int, str, int]] = []
    seen: dict[str, int] = {}
    for event_id in event_ids:
        stream = streams.event(event_id)
        recorded = await read_stream(pool, stream)
        inventory = holds.EventInventory()
        for event in recorded:
            inventory = holds.evolve_inventory(inventory, event.event())
        taken.extend(inventory.taken)
        seen[stream] = len(recorded)
    return taken, seen


async def schedule_event(
    pool: Pool, organization_id: int, cmd: catalog.ScheduleEvent, metadata: Metadata
) -> int:
    venue = await load_venue(pool, cmd.venue_id)
    return await _create(
        pool,
        kind="event",
        key=cmd.slug,
        organization_id=organization_id,
        stream=streams.event,
        decide=lambda eid, ids: catalog.schedule_event(cmd, organization_id, venue, eid, ids),
        extra_ids=len(cmd.ticket_types),
        metadata=metadata,
    )


async def open_attraction(
    pool: Pool, organization_id: int, cmd: catalog.OpenAttraction, metadata: Metadata
) -> int:
    venue = await load_venue(pool, cmd.venue_id)
    return await _create(
        pool,
        kind="attraction",
        key=cmd.slug,
        organization_id=organization_id,
        stream=streams.attraction,
        decide=lambda aid, ids: catalog.open_attraction(cmd, organization_id, venue, aid, ids),
        extra_ids=len(cmd.ticket_types),
        metadata=metadata,
    )


async def create_discount_code(
    pool: Pool, organization_id: int, cmd: discounts.CreateDiscountCode, metadata: Metadata
) -> int:
    return await _create(
        pool,
        kind="discount",
        key=cmd.code.strip().upper(),
        organization_id=organization_id,
        stream=streams.discount,
        decide=lambda did, _: discounts.create_discount_code(cmd, organization_id, did),
        extra_ids=0,
        metadata=metadata,
    )


async def change_event_status(
    pool: Pool,
    event_id: int,
    decide: Callable[[catalog.EventListing], Sequence[Event]],
    metadata: Metadata,
) -> None:
    """Publish or cancel: decided against the event's current state, retried on a conflict
    (the event stream is busy during an on-sale)."""
    stream = streams.event(event_id)
    for _ in range(10):
        recorded = await read_stream(pool, stream)
        state: catalog.EventListing | None = None
        for r in recorded:
            state = catalog.evolve_listing(state, r.event())
        if state is None:
            raise NotFound(f"event {event_id} not found", "event_id")
        events = list(decide(state))
        if not events:
            return
        try:
            await append(pool, [PendingAppend(stream, len(recorded), events)], metadata)
            return
        except ConcurrencyError:
            continue
    raise ConcurrencyError(stream, "gave up after 10 attempts")
