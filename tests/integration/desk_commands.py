"""A desk kind for tests of the desk itself: its commands are plain functions of the event's
seats, so a test can make a desk decide whatever it needs (a refusal, an unstorable event,
an expectation of another stream) without going through the sales commands."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.inventory import holds
from domain.inventory.events import HeldSeat, SeatsHeld
from domain.sale_commands import Decision
from services.usecases.desk_kinds import Kind

Command = Callable[[holds.EventInventory], Decision]
EXPIRES = datetime.now(UTC) + timedelta(hours=1)


def _run(command: Command, state: holds.EventInventory, _: Mapping[str, Any]) -> Decision:
    return command(state)


PLAIN_COMMANDS = Kind(holds.EventInventory, holds.evolve_inventory, holds.clone_inventory, _run)
PLEDGING_COMMANDS = Kind(
    holds.EventInventory,
    holds.evolve_inventory,
    holds.clone_inventory,
    _run,
    claims=lambda command: getattr(command, "seats", frozenset()),
)


def hold_one(event_id: int, stream: str, seat_number: int, token: str | None = None) -> Command:
    """A command taking one seat of row A for a purchase (`token`, else a new one), or
    refusing with SeatsTaken; its result is the token."""
    buyer = token or uuid.uuid4().hex

    def command(state: holds.EventInventory) -> Decision:
        if (1, "A", seat_number) in state.taken:
            raise holds.SeatsTaken(f"seat A{seat_number} is taken")
        seat = HeldSeat(section_id=1, row="A", seat_number=seat_number, ticket_type_id=7)
        held = SeatsHeld(
            event_id=event_id, purchase_token=buyer, seats=[seat], counts={7: 1}, expires_at=EXPIRES
        )
        return Decision(events={stream: [held]}, result=buyer)

    command.seats = frozenset({(1, "A", seat_number)})  # type: ignore[attr-defined]
    return command
