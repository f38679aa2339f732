"""A command at a sales desk that also writes a stream the desk does not own (a purchase, at
the version its caller read) fails alone when that stream has moved: the desk cannot catch up
with it, and the buyers batched with it still get their seats."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg

from domain import purchasing, streams
from domain.inventory import holds
from domain.sale_commands import Decision
from infra.eventstore import NO_STREAM, ConcurrencyError, PendingAppend, append, read_stream
from services.usecases.desk import Desk
from tests.integration.desk_commands import PLAIN_COMMANDS, hold_one
from tests.integration.test_desk import META


async def test_a_stale_expectation_on_another_stream_fails_only_its_command(
    pool: asyncpg.Pool,
) -> None:
    event_id = random.randint(10**8, 10**9)
    stream = f"event-{event_id}"
    desk = Desk(pool, stream, PLAIN_COMMANDS)
    await desk.ready()
    purchase = streams.purchase(uuid.uuid4().hex)
    moved = purchasing.PurchaseExpired(token=streams.purchase_token(purchase))
    await append(pool, [PendingAppend(purchase, NO_STREAM, [moved])], META)

    def stale(state: holds.EventInventory) -> Decision:
        """Decided on the purchase as it was before its first event."""
        late = purchasing.PurchaseCancelled(token=moved.token, reason="stale")
        return Decision(events={purchase: [late]}, expected={purchase: NO_STREAM})

    results = await asyncio.gather(
        desk.submit(hold_one(event_id, stream, 1), META),
        desk.submit(stale, META),
        desk.submit(hold_one(event_id, stream, 2), META),
        return_exceptions=True,
    )

    assert isinstance(results[1], ConcurrencyError) and results[1].stream_id == purchase
    assert all(isinstance(r, str) for r in (results[0], results[2])), results
    held = [r.event() for r in await read_stream(pool, stream)]
    assert sorted(s.seat_number for e in held for s in e.seats) == [1, 2]
    assert [r.type for r in await read_stream(pool, purchase)] == ["PurchaseExpired"]
    await desk.close()
