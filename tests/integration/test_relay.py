"""Invariant 2: every committed event reaches JetStream exactly once, in stream order, even when
transactions commit out of position order, the relay crashes, or NATS goes away."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import defaultdict

import asyncpg
import msgspec
import nats
from nats.js.errors import APIError

from infra.bus import ensure_stream, jetstream
from infra.eventstore import ANY_VERSION, Metadata, PendingAppend, RecordedEvent, append
from infra.global_order import head, wait_until_settled
from infra.settings import Settings
from infra.supervise import stop_task
from services.workers.relay import Relay
from tests.integration.sample_projection import TallyCounted
from tests.servers import OwnNats, on_own_nats

META = Metadata(actor="test")


async def _published(js, settings: Settings) -> list[RecordedEvent]:
    """Everything in the JetStream stream, in stream order."""
    await ensure_stream(js, settings)
    sub = await js.subscribe(
        f"{settings.subject_prefix}.>", stream=settings.nats_stream, ordered_consumer=True
    )
    info = await js.stream_info(settings.nats_stream)
    out = []
    for _ in range(info.state.messages):
        msg = await sub.next_msg(timeout=5)
        out.append(msgspec.json.decode(msg.data, type=RecordedEvent))
    await sub.unsubscribe()
    return out


async def _wait_published(js, settings: Settings, expected_ids: set[str], timeout: float = 30):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await _published(js, settings)
        if expected_ids <= {e.event_id for e in got}:
            return got
        if asyncio.get_running_loop().time() > deadline:
            missing = expected_ids - {e.event_id for e in got}
            raise AssertionError(f"{len(missing)} events never published")
        await asyncio.sleep(0.2)


async def _caught_up(relay: Relay) -> Relay:
    """The relay with its checkpoint brought up to what earlier tests published."""
    await relay.reconcile()
    while await relay.publish_pending():
        pass
    return relay


async def _ids(pool: asyncpg.Pool, prefix: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT event_id::text FROM events WHERE stream_id LIKE $1", prefix + "%"
    )
    return {r[0] for r in rows}


async def test_concurrent_writers_with_late_commits_are_published_once_in_order(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    # A poll slower than the test's patience: every event must be published on a wake-up.
    relay = Relay(pool, js, settings, name=f"t-{run}", batch_size=50, idle_poll_seconds=60)
    task = asyncio.create_task(relay.run())
    streams = [f"tally-{run}{i}" for i in range(12)]
    rng = random.Random(7)

    async def writer(w: int) -> None:
        for n in range(15):
            stream = rng.choice(streams)
            async with pool.acquire() as conn, conn.transaction():
                await append(
                    conn, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=w)])], META
                )
                if n % 4 == w % 4:
                    # Hold this transaction open while others commit later positions.
                    await asyncio.sleep(rng.uniform(0.05, 0.3))

    try:
        await asyncio.gather(*(writer(w) for w in range(20)))
        expected = await _ids(pool, f"tally-{run}")
        assert len(expected) == 300
        published = await _wait_published(js, settings, expected)
    finally:
        await stop_task(task)
    mine = [e for e in published if e.stream_id.startswith(f"tally-{run}")]
    assert len(mine) == len(expected), "an event was published twice"
    versions: dict[str, list[int]] = defaultdict(list)
    for event in mine:
        versions[event.stream_id].append(event.version)
    for stream, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), f"{stream} out of order: {seen}"


async def test_relay_wakes_after_bursts_and_single_appends_without_polling(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    """A burst makes the relay stop asking appends to notify; when it runs dry it asks again, and
    a single append then wakes it. None of it may wait for the (here very slow) idle poll."""
    run = uuid.uuid4().hex[:8]
    relay = Relay(pool, js, settings, name=f"w-{run}", idle_poll_seconds=60)
    task = asyncio.create_task(relay.run())
    stream = f"tally-{run}"
    try:
        for _ in range(3):
            burst = [
                append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=i)])], META)
                for i in range(100)
            ]
            await asyncio.gather(*burst)
            await _wait_published(js, settings, await _ids(pool, stream), timeout=20)
            for i in range(3):
                await asyncio.sleep(0.2)
                await append(
                    pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=i)])], META
                )
                await _wait_published(js, settings, await _ids(pool, stream), timeout=20)
    finally:
        await stop_task(task)
    mine = [e.version for e in await _published(js, settings) if e.stream_id == stream]
    assert mine == list(range(1, 3 * 103 + 1))


async def test_relay_restart_after_ack_without_checkpoint_publishes_nothing_twice(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    name = f"crash-{run}"
    await _caught_up(Relay(pool, js, settings, name=name))
    stream = f"tally-{run}"
    for i in range(5):
        await append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=i)])], META)
    # Another database's open transaction holds the server-wide gate; the relay publishes
    # what is settled, so wait for that instead of counting on a quiet server.
    await wait_until_settled(pool, await head(pool))
    first = Relay(pool, js, settings, name=name)
    await first.reconcile()
    # Simulate a crash after the acks but before the checkpoint write.
    before = await pool.fetchrow("SELECT * FROM relay_checkpoint WHERE name = $1", name)
    assert await first.publish_pending() == 5
    await pool.execute(
        "UPDATE relay_checkpoint SET tx_id = $2, position = $3, event_id = $4 WHERE name = $1",
        name,
        before["tx_id"],
        before["position"],
        before["event_id"],
    )
    await append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=9)])], META)
    await wait_until_settled(pool, await head(pool))
    second = Relay(pool, js, settings, name=name)
    await second.reconcile()
    assert await second.publish_pending() == 1
    mine = [e for e in await _published(js, settings) if e.stream_id == stream]
    assert [e.version for e in mine] == [1, 2, 3, 4, 5, 6]


async def test_a_pass_leaves_its_acks_to_the_next_and_a_dry_pass_checkpoints_everything(
    pool: asyncpg.Pool, js, settings: Settings
) -> None:
    """Under load the relay does not stop for the acks of what it just sent: they are taken by
    the next pass, while it reads and sends the next batch, and a busy relay writes no
    checkpoint until its interval is up. Going idle, nothing is left unacked or unchecked:
    the pass that finds nothing new checkpoints all that was sent."""
    run = uuid.uuid4().hex[:8]
    name = f"pipe-{run}"
    relay = await _caught_up(Relay(pool, js, settings, name=name, checkpoint_seconds=60.0))
    checkpoint = "SELECT event_id::text FROM relay_checkpoint WHERE name = $1"
    before = await pool.fetchval(checkpoint, name)
    published = relay.published
    stream = f"tally-{run}"
    for batch in range(2):
        for i in range(3):
            await append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=i)])], META)
        await wait_until_settled(pool, await head(pool))
        assert await relay.publish_pending() == 3
        assert relay.published == published + 3 * batch
        assert await pool.fetchval(checkpoint, name) == before
    assert await relay.publish_pending() == 0
    assert relay.published == published + 6
    ids = await pool.fetch(
        "SELECT event_id::text FROM events WHERE stream_id = $1 ORDER BY version", stream
    )
    assert await pool.fetchval(checkpoint, name) == ids[-1][0]
    mine = [e for e in await _published(js, settings) if e.stream_id == stream]
    assert [e.version for e in mine] == [1, 2, 3, 4, 5, 6]


async def test_relay_survives_a_nats_outage(pool: asyncpg.Pool, settings: Settings) -> None:
    """Events written while the relay cannot reach NATS are published once it is back."""
    run = uuid.uuid4().hex[:8]
    server = OwnNats(settings.data_dir / f"nats-outage-{run}")
    local = on_own_nats(settings, server, run)
    stream = f"tally-{run}"
    await server.start()
    try:
        nc = await connect_when_up(local.nats_url)
        js = nc.jetstream()
        relay = Relay(pool, js, local, name=f"outage-{run}")
        task = asyncio.create_task(relay.run())
        await append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=1)])], META)
        await _wait_published(js, local, await _ids(pool, stream))
        await server.stop()
        for i in range(3):
            await append(pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=i)])], META)
        await asyncio.sleep(1.0)
        await server.start()
        got = await _wait_published(js, local, await _ids(pool, stream), timeout=30)
        assert [e.version for e in got if e.stream_id == stream] == [1, 2, 3, 4]
        await stop_task(task)
        await nc.close()
    finally:
        await server.stop()


async def connect_when_up(url: str) -> nats.NATS:
    for _ in range(100):
        with contextlib.suppress(Exception):
            return await nats.connect(
                url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=1
            )
        await asyncio.sleep(0.1)
    raise AssertionError(f"nats at {url} never came up")


async def test_a_refused_publish_is_answered_at_once_not_after_a_timeout(
    settings: Settings,
) -> None:
    """JetStream refuses a message that does not follow the one it expects: the publisher is
    told at once (nats-py's own handler lost the refusal, and a relay waited 10 s for it)."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = jetstream(nc)
        await ensure_stream(js, settings)
        subject = f"{settings.subject_prefix}.refusal-{uuid.uuid4().hex[:8]}"
        headers = {"Nats-Msg-Id": uuid.uuid4().hex, "Nats-Expected-Last-Msg-Id": "not-the-last"}
        future = await js.publish_async(subject, b"{}", headers=headers)
        started = asyncio.get_running_loop().time()
        with contextlib.suppress(APIError):
            async with asyncio.timeout(5):
                await future
        assert asyncio.get_running_loop().time() - started < 2
        assert isinstance(future.exception(), APIError)
        assert "wrong last msg ID" in str(future.exception())
    finally:
        await nc.close()
