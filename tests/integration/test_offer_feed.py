"""Gateways share their seat offers over a real NATS server: what one offers, the others pass
over; what it withdraws, they offer again; nothing anyone sends can stop a gateway's feed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client

from domain.seating import SeatKey
from infra.offer_feed import OfferFeed
from infra.settings import Settings
from services.api import offers
from services.api.offers import SeatOffers

EVENT = 4711
FRONT = [(1, "A", 5), (1, "A", 6)]


@pytest.fixture
async def clients(settings: Settings) -> AsyncIterator[list[Client]]:
    connected = [await nats.connect(settings.nats_url) for _ in range(3)]
    yield connected
    for nc in connected:
        await nc.close()


async def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, "the note never arrived"
        await asyncio.sleep(0.01)


async def _told(sender: SeatOffers, receiver: SeatOffers, seats: list[SeatKey]) -> None:
    """`sender` offers `seats` until `receiver` has them: core NATS may drop a note, and a
    gateway offers the odd seat now and then, not many at once."""
    deadline = time.monotonic() + 15
    while not set(seats) <= _seats(receiver):
        assert time.monotonic() < deadline, "the note never arrived"
        await sender.offer(EVENT, seats)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                await _until(lambda: set(seats) <= _seats(receiver))


def _seats(offers: SeatOffers) -> set[tuple[int, str, int]]:
    return {(s, r, n) for (s, r), numbers in offers.recent(EVENT).items() for n in numbers}


async def test_offers_and_withdrawals_reach_the_other_gateways(
    settings: Settings, clients: list[Client]
) -> None:
    gateways = [SeatOffers(OfferFeed(nc, settings.offers_subject)) for nc in clients[:2]]
    for gateway in gateways:
        await gateway.start()
    first, second = gateways
    await first.offer(EVENT, FRONT)
    await _until(lambda: _seats(second) == set(FRONT))
    assert _seats(first) == set(FRONT)

    await second.withdraw(EVENT, FRONT[:1])
    await _until(lambda: _seats(first) == set(FRONT[1:]))
    assert _seats(second) == set(FRONT[1:])

    # Garbage on the subject is dropped; the feed goes on.
    await clients[2].publish(f"{settings.offers_subject}.{EVENT}", b"not an offer")
    await first.offer(EVENT, [(1, "B", 1)])
    await _until(lambda: (1, "B", 1) in _seats(second))
    for gateway in gateways:
        await gateway.stop()


async def test_a_gateway_without_a_feed_keeps_its_offers_to_itself() -> None:
    alone = SeatOffers()
    await alone.start()
    await alone.offer(EVENT, FRONT)
    await alone.withdraw(EVENT, FRONT[:1])
    assert _seats(alone) == set(FRONT[1:])
    await alone.stop()


async def test_gateways_selling_one_event_at_once_know_their_place(
    settings: Settings, clients: list[Client]
) -> None:
    """Two gateways that keep telling each other of an event's seats (an on-sale) take lanes 0
    and 1 of 2 for it, so they suggest from different rows. A gateway alone, told of the odd
    offer, or one whose peer has gone quiet has the whole seat map to itself."""
    gateways = [SeatOffers(OfferFeed(nc, settings.offers_subject)) for nc in clients[:2]]
    for gateway in gateways:
        await gateway.start()
    first, second = gateways
    await _told(first, second, FRONT)
    await _told(second, first, [(1, "B", 1)])
    assert [g.lane(EVENT) for g in gateways] == [(1, 0), (1, 0)]

    for number in range(2, 2 + 2 * int(offers.PEER_NOTES)):
        await first.offer(EVENT, [(1, "C", number)])
        await second.offer(EVENT, [(1, "D", number)])
    await _until(lambda: sorted(g.lane(EVENT) for g in gateways) == [(2, 0), (2, 1)])
    assert [g.lane(EVENT + 1) for g in gateways] == [(1, 0), (1, 0)]
    await _until(lambda: [g.lane(EVENT) for g in gateways] == [(1, 0), (1, 0)])  # gone quiet
    for gateway in gateways:
        await gateway.stop()
