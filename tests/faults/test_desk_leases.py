"""Which gateway owns an event's sales desk lives in a NATS key-value bucket kept in memory:
a NATS server that restarts forgets it. The gateways must put it back, or each decides alone
from then on (correct, but every purchase of a busy event meets the other gateways' appends)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import nats

from infra.bus import lease_bucket
from infra.settings import Settings
from services.usecases.desk_owners import LEASE_SECONDS, RENEW_SECONDS, DeskOwners
from tests.servers import OwnNats, on_own_nats

WAIT_SECONDS = 30.0


async def test_a_restarted_nats_gets_the_owners_leases_back(
    settings: Settings, tmp_path: Path
) -> None:
    server = OwnNats(tmp_path / "jetstream")
    await server.start()
    own = on_own_nats(settings, server, uuid.uuid4().hex[:8])
    first = await nats.connect(own.nats_url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    second = await nats.connect(own.nats_url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    owner, other = await DeskOwners.open(first, own), await DeskOwners.open(second, own)
    try:
        await owner.serve(_no_answers)
        await other.serve(_no_answers)
        assert await owner.owner_of("event-1") == owner.me
        assert await other.owner_of("event-1") == owner.me
        await server.stop()
        await server.start()  # the bucket and its leases are gone
        deadline = time.monotonic() + WAIT_SECONDS
        agreed = 0
        while agreed < 2:  # the same owner seen twice, a renewal apart
            assert time.monotonic() < deadline, "the gateways did not agree on an owner again"
            await asyncio.sleep(RENEW_SECONDS + 0.5)
            seen = {await owner.owner_of("event-1"), await other.owner_of("event-1")}
            agreed = agreed + 1 if len(seen) == 1 else 0
        (one,) = seen
        leases = await lease_bucket(second.jetstream(), own.desk_owners_bucket, LEASE_SECONDS)
        assert (await leases.get("event-1")).value == one.encode()
    finally:
        await owner.close()
        await other.close()
        await first.close()
        await second.close()
        await server.stop()


async def _no_answers(data: bytes) -> bytes:
    return data
