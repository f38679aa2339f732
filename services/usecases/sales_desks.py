"""This process's sales desks (services/usecases/desk.py), one per inventory stream, and what they
sell: an event's seats or an attraction's days, each deciding domain/sale_commands.py's commands
with the discount codes' uses beside them. Opening, ending, settling and refunding a purchase all
find its inventory's desk here."""

from __future__ import annotations

from typing import Any, TypeVar

import asyncpg

from domain import discounts, sales, streams
from domain.inventory import attraction_days, holds
from domain.purchasing import PurchaseOpened
from services.usecases.desk import Desk
from services.usecases.desk_kinds import Aggregate, Kind

S = TypeVar("S")

DISCOUNT_CODES = Aggregate(lambda: None, discounts.evolve_discount, discounts.clone_discount)
EVENT_INVENTORY = Kind(
    holds.EventInventory,
    holds.evolve_inventory,
    holds.clone_inventory,
    sales.decide,
    DISCOUNT_CODES,
    sales.seats_chosen,
)
ATTRACTION_INVENTORY = Kind(
    attraction_days.AttractionInventory,
    attraction_days.evolve_attraction,
    attraction_days.clone_attraction,
    sales.decide,
    DISCOUNT_CODES,
)


class Desks:
    """The desks of this process, one per aggregate stream, created on first use."""

    def __init__(self, pool: asyncpg.Pool, snapshot_pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool
        self._snapshot_pool = snapshot_pool
        self._desks: dict[str, Desk[Any]] = {}

    def get(self, stream_id: str, kind: Kind[S]) -> Desk[S]:
        desk = self._desks.get(stream_id)
        if desk is None:
            desk = Desk(self._pool, stream_id, kind, snapshot_pool=self._snapshot_pool)
            self._desks[stream_id] = desk
        return desk

    def find(self, stream_id: str) -> Desk[Any] | None:
        """The stream's desk if this process has one: a read never makes one."""
        return self._desks.get(stream_id)

    @property
    def conflicts(self) -> int:
        return sum(d.conflicts for d in self._desks.values())

    async def close(self) -> None:
        for desk in self._desks.values():
            await desk.close()


def inventory_desk(desks: Desks, opened: PurchaseOpened) -> Any:
    """The sales desk of the event or attraction the purchase holds from."""
    if opened.event_id is not None:
        return desks.get(streams.event(opened.event_id), EVENT_INVENTORY)
    assert opened.attraction_id is not None
    return desks.get(streams.attraction(opened.attraction_id), ATTRACTION_INVENTORY)
