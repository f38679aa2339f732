"""Sales desks of two gateway processes selling the same event's seats at once, on the real
event store: every seat is held once, the desks run into each other's appends, and each
conflict costs only catching up with the other's events, never a reload of the stream."""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg

from domain.inventory import holds
from domain.sale_commands import Decision
from infra.eventstore import Metadata, read_stream
from infra.settings import Settings
from services.usecases.desk import Desk
from tests.integration.desk_commands import PLAIN_COMMANDS, PLEDGING_COMMANDS, hold_one

META = Metadata(request_id="desk-test", actor="test")
SEATS = 30


async def test_two_processes_desks_sell_each_seat_once_without_reloading(
    pool: asyncpg.Pool,
) -> None:
    event_id = random.randint(10**8, 10**9)
    stream = f"event-{event_id}"
    desks = [Desk(pool, stream, PLAIN_COMMANDS) for _ in range(2)]
    rng = random.Random(7)
    wanted = [rng.randint(1, SEATS) for _ in range(240)]

    async def buy(i: int, seat_number: int) -> str | None:
        # Spread over time, so both desks keep deciding on states the other has moved past.
        await asyncio.sleep(i * 0.001)
        try:
            return await desks[i % 2].submit(hold_one(event_id, stream, seat_number), META)
        except holds.SeatsTaken:
            return None

    results = await asyncio.gather(*(buy(i, n) for i, n in enumerate(wanted)))

    stored = [r.event() for r in await read_stream(pool, stream)]
    held = [seat.seat_number for e in stored for seat in e.seats]
    assert sorted(held) == sorted(set(wanted))
    assert sum(r is not None for r in results) == len(set(wanted))
    assert sum(d.conflicts for d in desks) > 0
    assert all(d.reloads == 0 for d in desks)
    # Each desk catches up with what the other appended after its last read, from its cached
    # version: a desk that has not been refused or conflicted since decides without reading.
    for desk in desks:
        await desk.catch_up(0)
        assert sorted(n for _, _, n in desk.cached.state.taken) == sorted(set(wanted))
    assert all(d.reloads == 0 for d in desks)

    # One process releases a seat; the other, whose cached state still has it taken, must not
    # turn the next buyer of that seat away.
    seat_number = wanted[0]
    token = desks[1].cached.state.taken[(1, "A", seat_number)]
    await desks[1].submit(
        lambda state: Decision(events={stream: holds.release_seats(state, token, "expired")}),
        META,
    )
    assert await desks[0].submit(hold_one(event_id, stream, seat_number), META) is not None
    for desk in desks:
        await desk.close()


async def test_a_forecast_decides_on_the_stored_state_and_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    event_id = random.randint(10**8, 10**9)
    stream = f"event-{event_id}"
    desk = Desk(pool, stream, PLAIN_COMMANDS)
    assert desk.forecast(hold_one(event_id, stream, 1)) is None  # nothing read yet
    await desk.submit(hold_one(event_id, stream, 1), META)
    other = Desk(pool, stream, PLAIN_COMMANDS)
    await other.ready()
    assert other.cached.version == 1 and (1, "A", 1) in other.cached.state.taken

    assert desk.forecast(hold_one(event_id, stream, 1)) is None  # would be refused
    foreseen = desk.forecast(hold_one(event_id, stream, 2))
    assert foreseen is not None and len(foreseen.events[stream]) == 1
    assert (1, "A", 2) not in desk.cached.state.taken and desk.cached.version == 1
    assert len(await read_stream(pool, stream)) == 1
    for each in (desk, other):
        await each.close()


async def test_a_forecast_waits_for_a_pledge_on_its_seats_then_sees_them_taken(
    pool: asyncpg.Pool,
) -> None:
    """While one purchase forecast to go through pays first, another forecasting the same
    seat learns the outcome before paying for it; one for another seat does not wait."""
    event_id = random.randint(10**8, 10**9)
    stream = f"event-{event_id}"
    desk = Desk(pool, stream, PLEDGING_COMMANDS)

    async def forecast_clear(seat_number: int) -> Decision | None:
        command = hold_one(event_id, stream, seat_number)
        await desk.pledges.wait_for(command)
        return desk.forecast(command)

    await desk.submit(hold_one(event_id, stream, 9), META)
    first = hold_one(event_id, stream, 1)
    assert desk.forecast(first) is not None
    with desk.pledges.pledge(first):
        waiting = asyncio.ensure_future(forecast_clear(1))
        other = await forecast_clear(2)
        assert other is not None
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await desk.submit(hold_one(event_id, stream, 1), META)
    assert await waiting is None  # seat 1 is taken now

    second = hold_one(event_id, stream, 3)
    assert desk.forecast(second) is not None
    with contextlib.suppress(RuntimeError), desk.pledges.pledge(second):
        waiting = asyncio.ensure_future(forecast_clear(3))
        await asyncio.sleep(0.01)
        raise RuntimeError("the first buyer's payment could not be started")
    assert await waiting is not None  # nothing was stored: seat 3 is still free
    await desk.close()


async def test_desks_that_keep_losing_take_their_turn_and_never_give_up(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Three processes' desks selling one event's seats as fast as buyers come: a desk that
    loses to the others twice in a row holds the stream's append lock for its next attempt, so
    every buyer gets an answer, none a ConcurrencyError after the desk gave up. Each process
    has a pool of one connection: a desk taking its turn reads on the connection it holds."""
    event_id = random.randint(10**8, 10**9)
    stream = f"event-{event_id}"
    pools = [
        await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1) for _ in range(3)
    ]
    desks = [Desk(own, stream, PLAIN_COMMANDS) for own in pools]
    rng = random.Random(11)
    starts = [rng.uniform(0, 0.3) for _ in range(600)]

    async def buy(i: int) -> str:
        await asyncio.sleep(starts[i])
        return await desks[i % 3].submit(hold_one(event_id, stream, i), META)

    async with asyncio.timeout(60):
        results = await asyncio.gather(*(buy(i) for i in range(600)), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    stored = [r.event() for r in await read_stream(pool, stream)]
    assert sorted(seat.seat_number for e in stored for seat in e.seats) == list(range(600))
    assert sum(d.conflicts for d in desks) > 0
    for desk in desks:
        await desk.close()
    for own in pools:
        await own.close()
