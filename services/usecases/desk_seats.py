"""An event's seats (an attraction's places) as this process's sales desk has stored them, for
readers that must not wait for the availability read model: seat suggestions, which must not
offer seats sold moments ago to buyer after buyer while the read model lags (a projector or
NATS outage), and the availability, seat plan and seat checks the gateway selling the event
answers, which show a hold or a release the moment it is stored."""

from __future__ import annotations

import time
from dataclasses import dataclass

from domain import streams
from domain.inventory import attraction_days, holds
from domain.seating import TakenSeats
from services.usecases.desk import Desk
from services.usecases.desk_kinds import Kind
from services.usecases.sales_desks import Desks


@dataclass(frozen=True)
class SellingNow:
    """An event's taken seats as its sales desk here has stored them, at the desk's `version`
    of the event's stream."""

    taken: TakenSeats
    version: int


class DeskSeats:
    def __init__(self, desks: Desks, inventory: Kind[holds.EventInventory]) -> None:
        self._desks = desks
        self._inventory = inventory
        self._taken: dict[int, tuple[TakenSeats, int, TakenSeats]] = {}
        # Per event, the read model's latest taken seats seen here and when first seen.
        self._seen: dict[int, tuple[TakenSeats, float]] = {}
        # Per event, the desk's own taken seats at a version of the stream.
        self._stored: dict[int, tuple[int, TakenSeats]] = {}
        # Per event, the read model's latest counts per ticket type seen here and when first.
        self._counted: dict[int, tuple[dict[int, int], float]] = {}

    async def taken(self, event_id: int, shown: TakenSeats, within: float) -> TakenSeats:
        """The seats the availability read model shows taken (`shown`) and those the event's
        stream holds as this process's sales desk has them (read again first unless the desk
        was in step with the stream within `within` seconds), merged once per change of either
        rather than per request: in an on-sale every auto-select asks, and the merge copies
        every row."""
        cached = (await self._caught_up(event_id, within)).cached
        memo = self._taken.get(event_id)
        if memo is not None and memo[0] is shown and memo[1] == cached.version:
            return memo[2]
        merged = shown.plus(cached.state.taken_by_row)
        self._taken[event_id] = (shown, cached.version, merged)
        return merged

    async def _caught_up(self, event_id: int, within: float) -> Desk[holds.EventInventory]:
        desk = self._desks.get(streams.event(event_id), self._inventory)
        await desk.catch_up(within)
        return desk

    async def selling_now(
        self, event_id: int, shown: TakenSeats, within: float
    ) -> SellingNow | None:
        """The event's taken seats and counts per ticket type as this process's sales desk has
        stored them, or None when this process does not sell the event (a read never makes a
        desk, nor loads a stream): availability read where the holds are decided shows a hold
        the moment it is stored, and a cancelled purchase's seats free the moment the cancel is,
        not once the read model catches up. Where the read model (`shown`) has a seat taken
        that the desk has not, the desk reads its stream first unless it was in step with it
        after `shown` was first seen here: then it is the newer of the two."""
        desk = self._desks.find(streams.event(event_id))
        if desk is None or not desk.cached.version:
            return None
        merged = await self.taken(event_id, shown, within)
        state: holds.EventInventory = desk.cached.state
        if len(merged) > _count(state):
            if desk.in_step_at < self._first_seen(event_id, shown):
                await desk.catch_up(0.0)
                state = desk.cached.state
            merged = self._as_stored(event_id, desk.cached.version, state)
        return SellingNow(merged, desk.cached.version)

    async def counted_now(self, event_id: int, shown: dict[int, int]) -> dict[int, int] | None:
        """Per ticket type, what is taken as this process's sales desk has stored it, or None
        when this process does not sell the event: a cancelled or refunded purchase's standing
        places count free the moment the release is stored. Where the read model (`shown`)
        counts more of a type, the desk reads its stream first unless it was in step with it
        after those counts were first seen here: then it is the newer of the two."""
        desk = self._desks.find(streams.event(event_id))
        if desk is None or not desk.cached.version:
            return None
        state: holds.EventInventory = desk.cached.state
        if any(n > state.taken_per_type.get(t, 0) for t, n in shown.items()):
            seen = self._counted.get(event_id)
            if seen is None or seen[0] != shown:
                seen = self._counted[event_id] = (shown, time.monotonic())
            if desk.in_step_at < seen[1]:
                await desk.catch_up(0.0)
                state = desk.cached.state
        return dict(state.taken_per_type)

    async def to_pass_over(self, event_id: int, shown: TakenSeats, within: float) -> TakenSeats:
        """The seats a suggestion must not offer: as `selling_now` has them where this process
        sells the event (a cancelled purchase's seats are offered again the moment the cancel
        is stored), else `taken` (the read model's with those of the stream as read here)."""
        selling = await self.selling_now(event_id, shown, within)
        return selling.taken if selling is not None else await self.taken(event_id, shown, within)

    async def attraction_now(
        self, attraction_id: int, within: float
    ) -> tuple[attraction_days.AttractionInventory, int] | None:
        """The attraction's places taken (per ticket type and per day) as this process's sales
        desk has stored them, at its version of the stream (read again first unless in step
        within `within` seconds), or None when this process does not sell the attraction."""
        desk = self._desks.find(streams.attraction(attraction_id))
        if desk is None or not desk.cached.version:
            return None
        await desk.catch_up(within)
        return desk.cached.state, desk.cached.version

    def _first_seen(self, event_id: int, shown: TakenSeats) -> float:
        seen = self._seen.get(event_id)
        if seen is None or seen[0] is not shown:
            seen = self._seen[event_id] = (shown, time.monotonic())
        return seen[1]

    def _as_stored(self, event_id: int, version: int, state: holds.EventInventory) -> TakenSeats:
        stored = self._stored.get(event_id)
        if stored is None or stored[0] != version:
            rows = {row: frozenset(numbers) for row, numbers in state.taken_by_row.items()}
            stored = self._stored[event_id] = (version, TakenSeats(rows))
        return stored[1]


def _count(state: holds.EventInventory) -> int:
    return sum(map(len, state.taken_by_row.values()))
