"""Seats recently offered by best-available, per event, so that buyers who ask at the same moment
are offered different seats.

Best-available is deterministic: in an on-sale thousands of buyers asking within the same
second would all be offered the same front-row block, and all but one would be refused with
`seats_taken` when they buy. An offer holds nothing (POST /purchases decides against the
event's own stream, and anyone may still buy an offered seat); it only steers the next
suggestions elsewhere for a while. A purchase refused for those seats withdraws the offer: the
seats someone else took show as taken soon enough, and the others are free for the next buyer.
With an offer feed, the gateways tell each other what they offer and withdraw
(`infra/offer_feed.py`), so buyers of one event served by different gateways are offered
different seats too, but for the moment a note takes to arrive.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping

from domain.seating import RowKey, SeatKey
from infra.offer_feed import OfferFeed, OfferNote

OFFER_SECONDS = 20.0
# Another gateway counts as suggesting an event's seats at the same moment while it tells of
# them at this many notes a second or more (in an on-sale, hundreds; a shop's odd request, one),
# its rate measured with this time constant.
PEER_NOTES = 10.0
PEER_SECONDS = 1.0


class SeatOffers:
    def __init__(self, feed: OfferFeed | None = None, seconds: float = OFFER_SECONDS) -> None:
        self._feed = feed
        self._seconds = seconds
        self._offered: dict[int, dict[RowKey, dict[int, float]]] = {}
        # The same, frozen per row and made again only when the row's offers change: every
        # auto-select merges them into the taken seats, by identity where a row is unchanged.
        self._frozen: dict[int, dict[RowKey, frozenset[int]]] = {}
        self._expiry: deque[tuple[float, int, RowKey, int]] = deque()
        # Per event, the other gateways heard of: their notes a second (decaying) and when.
        self._peers: dict[int, dict[str, tuple[float, float]]] = {}

    async def start(self) -> None:
        if self._feed is not None:
            await self._feed.start(self._heard)

    async def stop(self) -> None:
        if self._feed is not None:
            await self._feed.stop()

    def recent(self, event_id: int) -> Mapping[RowKey, Iterable[int]]:
        """The event's seat numbers per row offered within the last `seconds`."""
        self._expire(time.monotonic())
        return self._frozen.get(event_id, {})

    def lane(self, event_id: int) -> tuple[int, int]:
        """How many gateways suggest the event's seats at this moment, and this one's place
        among them by their names in the notes: (1, 0) when it is alone. Gateways suggesting
        seats at the same moment pick the same best block, each before the other's note
        arrives, so each suggests from rows of its own first (`seating.outside_lane`). A
        gateway busy with other events, or asked now and then, does not count."""
        peers = self._peers.get(event_id)
        if self._feed is None or not peers:
            return 1, 0
        now = time.monotonic()
        busy = []
        for sender, (rate, at) in list(peers.items()):
            rate = _decayed(rate, now - at)
            if rate < 1.0:
                del peers[sender]
            elif rate >= PEER_NOTES:
                busy.append(sender)
        return len(busy) + 1, sum(sender < self._feed.me for sender in busy)

    async def offer(self, event_id: int, seats: Iterable[SeatKey]) -> None:
        seats = list(seats)
        self._keep(event_id, seats)
        if self._feed is not None and seats:
            await self._feed.tell(event_id, seats)

    async def withdraw(self, event_id: int, seats: Iterable[SeatKey]) -> None:
        """Ends the offer of these seats at once, here and in the other gateways."""
        seats = list(seats)
        self._drop(event_id, seats)
        if self._feed is not None and seats:
            await self._feed.tell(event_id, seats, withdrawn=True)

    def _heard(self, note: OfferNote) -> None:
        """Another gateway's offer or withdrawal."""
        now = time.monotonic()
        peers = self._peers.setdefault(note.event_id, {})
        rate, at = peers.get(note.sender, (0.0, now))
        peers[note.sender] = (_decayed(rate, now - at) + 1.0, now)
        (self._drop if note.withdrawn else self._keep)(note.event_id, note.seats)

    def _keep(self, event_id: int, seats: Iterable[SeatKey]) -> None:
        until = time.monotonic() + self._seconds
        rows = self._offered.setdefault(event_id, {})
        changed = set()
        for section_id, row, number in seats:
            rows.setdefault((section_id, row), {})[number] = until
            self._expiry.append((until, event_id, (section_id, row), number))
            changed.add((event_id, (section_id, row)))
        self._refreeze(changed)

    def _drop(self, event_id: int, seats: Iterable[SeatKey]) -> None:
        """Their turn in the expiry queue then finds nothing to remove."""
        rows = self._offered.get(event_id, {})
        changed = set()
        for section_id, row, number in seats:
            numbers = rows.get((section_id, row))
            if numbers is not None and numbers.pop(number, None) is not None:
                changed.add((event_id, (section_id, row)))
        self._refreeze(changed)

    def _expire(self, now: float) -> None:
        """Offers expire in the order they were made; a seat offered again lives on."""
        changed = set()
        while self._expiry and self._expiry[0][0] <= now:
            until, event_id, row, number = self._expiry.popleft()
            numbers = self._offered.get(event_id, {}).get(row, {})
            if numbers.get(number) == until:
                del numbers[number]
                changed.add((event_id, row))
        self._refreeze(changed)

    def _refreeze(self, changed: Iterable[tuple[int, RowKey]]) -> None:
        """Freezes the changed rows again; a row, and then an event, left with no offer goes."""
        for event_id, row in changed:
            rows = self._offered[event_id]
            frozen = self._frozen.setdefault(event_id, {})
            if rows.get(row):
                frozen[row] = frozenset(rows[row])
                continue
            rows.pop(row, None)
            frozen.pop(row, None)
            if not rows:
                del self._offered[event_id]
                del self._frozen[event_id]


def _decayed(rate: float, seconds: float) -> float:
    return rate * math.exp(-seconds / PEER_SECONDS)
