"""Gateways share their seat offers over a real NATS server: what one offers, the others pass
over; what it withdraws, they offer again; nothing anyone sends can stop a gateway's feed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client

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
    settings: Settings, clients: list[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gateways that heard each other of an event within the last moment rank 0 and 1 for
    it (the second passes over the block the first is about to suggest); alone, or once the
    other has gone quiet, a gateway ranks 0 and suggests the very best seats."""
    monkeypatch.setattr(offers, "PEER_SECONDS", 0.3)
    gateways = [SeatOffers(OfferFeed(nc, settings.offers_subject)) for nc in clients[:2]]
    for gateway in gateways:
        await gateway.start()
    assert [g.rank(EVENT) for g in gateways] == [0, 0]
    first, second = gateways
    await first.offer(EVENT, FRONT)
    await _until(lambda: _seats(second) == set(FRONT))
    await second.offer(EVENT, [(1, "B", 1)])
    await _until(lambda: (1, "B", 1) in _seats(first))
    assert sorted(g.rank(EVENT) for g in gateways) == [0, 1]
    assert [g.rank(EVENT + 1) for g in gateways] == [0, 0]
    await asyncio.sleep(0.35)
    assert [g.rank(EVENT) for g in gateways] == [0, 0]
    for gateway in gateways:
        await gateway.stop()
