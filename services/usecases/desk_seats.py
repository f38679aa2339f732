"""An event's seats as this process's sales desk has stored them, for readers that must not wait
for the availability read model: seat suggestions, which must not offer seats sold moments ago
to buyer after buyer while the read model lags (a projector or NATS outage), and the
availability the gateway selling the event answers, which shows a hold the moment it is stored."""

from __future__ import annotations

from dataclasses import dataclass

from domain import streams
from domain.inventory import holds
from domain.seating import TakenSeats
from services.usecases.desk import Desk, Desks, Kind


@dataclass(frozen=True)
class SellingNow:
    """An event's taken seats and counts per ticket type as its sales desk here has stored
    them, at the desk's `version` of the event's stream."""

    taken: TakenSeats
    taken_per_type: dict[int, int]
    version: int


class DeskSeats:
    def __init__(self, desks: Desks, inventory: Kind[holds.EventInventory]) -> None:
        self._desks = desks
        self._inventory = inventory
        self._taken: dict[int, tuple[TakenSeats, int, TakenSeats]] = {}

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
        """What this process's sales desk has stored of the event beyond what the read model
        shows (`taken`, and the counts per ticket type), or None when this process does not
        sell the event: availability read where the holds are decided shows them at once, not
        once the read model catches up (a read never makes a desk, nor loads a stream)."""
        desk = self._desks.find(streams.event(event_id))
        if desk is None or not desk.cached.version:
            return None
        taken = await self.taken(event_id, shown, within)
        state: holds.EventInventory = desk.cached.state
        return SellingNow(taken, dict(state.taken_per_type), desk.cached.version)
