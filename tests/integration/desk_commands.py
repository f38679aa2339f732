"""A desk kind for tests of the desk itself: its commands are plain functions of the event's
seats, so a test can make a desk decide whatever it needs (a refusal, an unstorable event,
an expectation of another stream) without going through the sales commands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from domain import holds
from domain.sales import Decision
from services.usecases.desk import Kind

Command = Callable[[holds.EventInventory], Decision]


def _run(command: Command, state: holds.EventInventory, _: Mapping[str, Any]) -> Decision:
    return command(state)


PLAIN_COMMANDS = Kind(holds.EventInventory, holds.evolve_inventory, holds.clone_inventory, _run)
